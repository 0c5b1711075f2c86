"""h2floor: a hand-written HTTP/2 gRPC server prototype (issue 11); see server.py."""

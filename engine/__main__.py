"""`python -m engine` is `raftnode`."""
from engine.cli.main import main

raise SystemExit(main())

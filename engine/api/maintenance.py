"""etcd's Maintenance service (v3rpc/maintenance.go at v3.4.23)."""
from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile

from engine.auth import errors as auth_errors
from engine.mvcc import etcd_snapshot
from engine.proto import internal_pb2, rpc_pb2, rpc_pb2_grpc
from engine.server import errors as server_errors
from engine.server.kvserver import KVServer

from .auth import require_root
from .errors import abort
from .gate import check, checked, request_timeout
from .submit import submit

IR = internal_pb2.InternalRequest
VERSION = "3.4.23"              # the etcd version whose API we speak
SNAPSHOT_CHUNK = 32 * 1024      # etcd's snapshotSendBufferSize


def alarm_text(member_id: int, alarm: int) -> str:
    """An AlarmMember as etcd's Status.errors shows it (gogoproto's compact
    text, trailing space included): 'memberID:123 alarm:NOSPACE '."""
    # An alarm type etcd does not know (accepted and stored, as by etcd)
    # prints as its number, as gogoproto does.
    name = rpc_pb2.AlarmType.Name(alarm) if alarm in rpc_pb2.AlarmType.values() else str(alarm)
    return f"memberID:{member_id} alarm:{name} "


async def _hash_job(server: KVServer, rev: int):
    """The index part of a hash on the loop, a slice of keys per iteration
    (after a compaction it reads every key's history); the job it returns
    reads the rows on a worker."""
    steps = server.hash_kv_steps(rev)
    async with server.between_batches():   # its first step pins a reader and the revision
        try:
            next(steps)
        except StopIteration as done:
            return done.value
    while True:
        await asyncio.sleep(0)
        try:
            next(steps)
        except StopIteration as done:
            return done.value


class MaintenanceServicer(rpc_pb2_grpc.MaintenanceServicer):
    def __init__(self, server: KVServer) -> None:
        self.server = server
        self._defrag_lock = asyncio.Lock()

    async def Status(self, request, context):
        server = self.server
        await checked(server, context, learner_ok=True)
        resp = rpc_pb2.StatusResponse(
            version=VERSION, dbSize=server.db_size(), leader=server.leader_id,
            raftIndex=server.committed_index, raftTerm=server.term,
            raftAppliedIndex=server.applied_index,
            dbSizeInUse=server.db_size_in_use(), isLearner=server.is_learner)
        if not server.leader_id:
            resp.errors.append(server_errors.NoLeader.etcd_message)
        for member_id, alarm in server.alarms():
            resp.errors.append(alarm_text(member_id, alarm))
        server.fill_header(resp.header)
        return resp

    async def Alarm(self, request: rpc_pb2.AlarmRequest, context):
        try:
            check(self.server, context)
            try:
                resp = await submit(self.server, context, IR(alarm=request))
            except auth_errors.AuthError as e:
                raise auth_errors.raw(e) from None   # etcd 3.4's Alarm answers it untranslated
        except Exception as e:
            await abort(context, e)
        resp.ClearField("header")  # etcd 3.4 answers Alarm without a header
        return resp

    async def Defragment(self, request, context):
        """etcd rewrites bbolt while blocking writes; here the member keeps
        ticking AND applying: a worker VACUUMs INTO a copy from its own
        read-only connection, then the loop replays the writes made
        meanwhile onto the copy and swaps it in (milliseconds)."""
        server = self.server
        try:
            check(server, context)
            await _admin(server, context)
            async with self._defrag_lock:
                # Pending physical compaction first, a bounded slice at a time.
                while not await _between_batches(server, server.compact_step):
                    await asyncio.sleep(0)
                copy, finish = await _between_batches(server, server.defrag_job)
                ok = False
                try:
                    await asyncio.to_thread(copy)
                    ok = True
                finally:
                    await _between_batches(server, lambda: finish(ok))
        except Exception as e:
            await abort(context, e)
        return rpc_pb2.DefragmentResponse()

    async def Hash(self, request, context):
        # etcd hashes the whole bbolt file; we have no such file format, so
        # Hash is the hash of the key space (HashKV at the current revision).
        try:
            check(self.server, context)
            await _admin(self.server, context)
            got = await asyncio.to_thread(await _hash_job(self.server, 0))
        except Exception as e:
            await abort(context, e)
        resp = rpc_pb2.HashResponse(hash=got.hash)
        resp.header.revision = got.header.revision
        self.server.fill_header(resp.header)
        return resp

    async def HashKV(self, request: rpc_pb2.HashKVRequest, context):
        try:
            check(self.server, context)
            await _admin(self.server, context)
            # The index part here, the rows on a worker (a pinned reader).
            resp = await asyncio.to_thread(await _hash_job(self.server, request.revision))
        except Exception as e:
            await abort(context, e)
        self.server.fill_header(resp.header)
        return resp

    async def Snapshot(self, request, context):
        """The store as etcd 3.4's backend file (bbolt) in 32 KiB chunks with the bytes still to come,
        then one message holding their sha256 (what `etcdctl snapshot save`
        checks: file size % 512 == 32, the last 32 bytes the digest).

        The copy is written off the loop to a temporary file (0600) beside
        the db from a reader pinned now, streamed from that file, deleted."""
        server = self.server
        tmp = None
        try:
            check(server, context)
            await _admin(server, context)
            fd, tmp = tempfile.mkstemp(prefix=".snapshot-send-",
                                       dir=os.path.dirname(os.path.abspath(server.db_path)))
            os.close(fd)
            reader = await _between_batches(server, server.pin)
            try:
                # etcd's format (a bbolt file): etcdctl snapshot status/restore read it, and
                # `raftnode snapshot restore` takes it back (engine/mvcc/etcd_snapshot.py)
                total = await asyncio.to_thread(etcd_snapshot.reader_to_bbolt, reader, tmp)
            finally:
                reader.release()
            f = open(tmp, "rb")
        except Exception as e:
            if tmp is not None:
                os.unlink(tmp)
            await abort(context, e)
        try:
            os.unlink(tmp)  # the open file stays readable; nothing is left behind
            digest = hashlib.sha256()
            sent = 0
            while sent < total:
                chunk = f.read(SNAPSHOT_CHUNK)
                if not chunk:
                    break
                sent += len(chunk)
                digest.update(chunk)
                await context.write(rpc_pb2.SnapshotResponse(remaining_bytes=total - sent, blob=chunk))
            await context.write(rpc_pb2.SnapshotResponse(remaining_bytes=0, blob=digest.digest()))
        finally:
            f.close()

    async def MoveLeader(self, request: rpc_pb2.MoveLeaderRequest, context):
        server = self.server
        try:
            check(server, context)
            if not server.is_leader:
                raise server_errors.NotLeader()
            target = request.targetID
            rec = server.member(target)
            if rec is None or rec.is_learner:
                raise server_errors.BadLeaderTransferee()
            if target != server.member_id:  # etcd: moving to ourselves is done already
                await server.transfer_leadership(target, request_timeout(server, context))
        except Exception as e:
            await abort(context, e)
        return rpc_pb2.MoveLeaderResponse()


async def _between_batches(server: KVServer, step):
    """step() while no apply chunk is half done (see KVServer.between_batches)."""
    async with server.between_batches():
        return step()


async def _admin(server: KVServer, context) -> None:
    """etcd 3.4's authMaintenanceServer (Defragment, Snapshot, Hash, HashKV):
    root only while auth is on, refused with the auth package's own text."""
    try:
        await require_root(server, context)
    except auth_errors.AuthError as e:
        raise auth_errors.raw(e) from None

"""The simulated kernel's tree on disk: reads and writes under the root, the undo journal that
makes each kernel write atomic against a killed writer, and the uevents a write sends.

The tree is the state (driver links, virtfn links, sriov_numvfs files); the marker file holds
only what the tree cannot show (hardware limits, driver ID tables, faults): `_model`.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

from sriov_node.locks import FileLock
from sriov_node.sim import MARKER

LOG = ".sriov-node-sim.log"
LOCK = ".sriov-node-sim.lock"
JOURNAL = ".sriov-node-sim.journal"
UEVENT_LOG = ".sriov-node-sim.uevents"
# A listener (the daemon's simulated uevent source) binds this datagram socket to be told that
# uevents were appended to UEVENT_LOG
UEVENT_SOCKET = "run/sriov-node-sim/uevents.sock"
# rtnetlink's link group: an RTM_NEWLINK per change of a netdev's state (a VF setting, an MTU), sent
# the same way to the listener bound at LINK_SOCKET (Links.listen)
LINK_LOG = ".sriov-node-sim.links"
LINK_SOCKET = "run/sriov-node-sim/links.sock"


@contextlib.contextmanager
def unix_address(path: str) -> Iterator[str]:
    """`path` as an AF_UNIX address: a root prefix deep in a test's tree can pass the 107 bytes a
    socket address holds, so a long one goes through its directory's /proc/self/fd link."""
    if len(os.fsencode(path)) < 100:
        yield path
        return
    fd = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{os.path.basename(path)}"
    finally:
        os.close(fd)


def _remove_tree(path: str) -> None:
    """A directory and all under it, whatever is left of it (shutil is imported only here: it pulls
    bz2 and lzma in, which a run that removes nothing never needs)."""
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _err(code: int, text: str = "") -> OSError:
    return OSError(code, text or os.strerror(code))


class SimTree:
    """The tree and the model file of one simulated root, and the journal of the write under way."""

    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self.model_path = os.path.join(self.root, MARKER)
        self._model: Dict[str, Any] = {}
        self._stamp: Optional[Tuple[int, int]] = None
        self._journal: Optional[int] = None  # the undo log's fd while a write is under way
        self._created: Set[str] = set()
        self._stashed = 0
        self._dirty = False  # the model changed and must be saved before this write ends
        self._dirs: Dict[str, str] = {}  # bdf -> its directory, within one write
        self._events: List[Dict[str, str]] = []  # uevents of the write under way, sent when it completes
        self._links: List[Dict[str, str]] = []  # its RTM_NEWLINK notifications, sent with them

    # ------------------------------------------------------------ model + tree io

    def _load(self) -> Dict[str, Any]:
        st = os.stat(self.model_path)
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            with open(self.model_path) as fh:
                self._model = json.load(fh)
            self._stamp = stamp
        return self._model

    def _save(self) -> None:
        self._dirty = False
        self._remember(MARKER)
        tmp = self.model_path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(self._model, fh, indent=1, sort_keys=True)
        os.replace(tmp, self.model_path)
        st = os.stat(self.model_path)
        self._stamp = (st.st_mtime_ns, st.st_size)

    def _p(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    def _makedirs(self, rel_dir: str) -> None:
        if os.path.isdir(self._p(rel_dir)):
            return
        top = rel_dir  # remember the highest directory this call creates: undo removes it whole
        while os.path.dirname(top) and not os.path.isdir(self._p(os.path.dirname(top))):
            top = os.path.dirname(top)
        self._remember(top)
        os.makedirs(self._p(rel_dir), exist_ok=True)

    def _put(self, rel: str, text: str, mode: int = 0o644) -> None:
        self._makedirs(os.path.dirname(rel))
        self._remember(rel)
        path = self._p(rel)
        with open(path, "w") as fh:
            fh.write(text)
        os.chmod(path, mode)

    def _get(self, rel: str) -> Optional[str]:
        try:
            with open(self._p(rel)) as fh:
                return fh.read().rstrip("\n")
        except OSError:
            return None

    def _link(self, rel_link: str, rel_target: str) -> None:
        link = self._p(rel_link)
        self._link_abs(rel_link, os.path.relpath(self._p(rel_target), os.path.dirname(link)))

    def _link_abs(self, rel_link: str, target: str) -> None:
        self._makedirs(os.path.dirname(rel_link))
        self._remember(rel_link)
        link = self._p(rel_link)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(target, link)

    def _unlink(self, rel: str) -> None:
        if os.path.lexists(self._p(rel)):
            self._remember(rel)
            try:
                os.unlink(self._p(rel))
            except FileNotFoundError:
                pass

    def _rmtree(self, rel: str) -> None:
        path = self._p(rel)
        if not os.path.lexists(path):
            return
        if self._journal is None or self._covered(rel):
            _remove_tree(path)
            return
        # Undoable: the tree moves aside into the journal, and back if the writer dies.
        self._stashed += 1
        stash = os.path.join(self._journal_dir, "stash", str(self._stashed))
        self._record({"op": "stash", "path": rel, "stash": str(self._stashed)})
        os.rename(path, stash)

    # ------------------------------------------------------------ atomic writes (undo journal)
    #
    # A real kernel finishes a sysfs store even when the writing process is killed: nobody ever
    # sees half of one. Here one write touches many files, so each mutation first records how to
    # undo it; a writer that dies mid-write leaves the journal, and the next user of the model
    # rolls the tree back to the state before that write.

    @property
    def _journal_dir(self) -> str:
        return self._p(JOURNAL)

    def _begin(self) -> None:
        self._dirs = {}
        self._events = []
        self._links = []
        os.makedirs(os.path.join(self._journal_dir, "stash"), exist_ok=True)
        self._journal = os.open(os.path.join(self._journal_dir, "undo"),
                                os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o600)
        self._created = set()
        self._stashed = 0

    def _commit(self) -> None:
        if self._journal is not None:
            os.close(self._journal)
            self._journal = None
        # One rename completes the write; a writer killed while deleting the journal must not
        # leave half of it behind (a recovery would then undo only part of a finished write).
        done = self._journal_dir + ".done"
        if os.path.isdir(self._journal_dir):
            _remove_tree(done)
            os.rename(self._journal_dir, done)
        _remove_tree(done)
        self._broadcast()

    # ------------------------------------------------------------ uevents (kernel-sriov-spec §5)

    def _emit(self, action: str, subsystem: str, rel: str, **props: str) -> None:
        """Queue one uevent for the device (or netdev) at `rel`; numbered as the kernel numbers them."""
        seq = int(self._get("sys/kernel/uevent_seqnum") or 0) + 1
        self._put("sys/kernel/uevent_seqnum", f"{seq}\n", 0o444)
        event = {"ACTION": action, "SUBSYSTEM": subsystem, "DEVPATH": "/" + os.path.relpath(rel, "sys"),
                 "SEQNUM": str(seq)}
        event.update({k: v for k, v in props.items() if v is not None})
        self._events.append(event)

    def _notify_link(self, ifname: str) -> None:
        """Queue the RTM_NEWLINK rtnetlink sends its link group when netdev `ifname`'s state changes
        (do_setlink's netdev_state_change: a VF setting, an MTU, up or down)."""
        index = (self._get(f"sys/class/net/{ifname}/ifindex") or "0").strip()
        self._links.append({"IFNAME": ifname, "IFINDEX": index if index.isdigit() else "0"})

    def _broadcast(self) -> None:
        """Append the write's uevents to the log in one write, then ring the listener's socket; the
        listener reads the log from where it left off. A datagram per uevent would be lost once
        ten wait unread (net.unix.max_dgram_qlen), where the kernel's netlink socket loses them only
        when its receive buffer is full (SimUeventSocket models that). A ring dropped because rings
        wait already loses nothing: one wakes the listener. The write's link notifications go the
        same way to their own log and listener."""
        events, self._events = self._events, []
        links, self._links = self._links, []
        if links:
            self._publish(LINK_LOG, LINK_SOCKET, links)
        if events:
            self._publish(UEVENT_LOG, UEVENT_SOCKET, events)

    def _publish(self, log: str, listener: str, events: List[Dict[str, str]]) -> None:
        fd = os.open(self._p(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, "".join(json.dumps(event) + "\n" for event in events).encode())
        finally:
            os.close(fd)
        path = self._p(listener)
        if not os.path.exists(path):
            return
        import socket  # only when someone listens

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            with unix_address(path) as address:
                sock.setblocking(False)
                sock.sendto(b"\n", address)
        except OSError:
            pass  # nobody listening, or rings wait already
        finally:
            sock.close()

    def _record(self, entry: Dict[str, Any]) -> None:
        os.write(self._journal, (json.dumps(entry) + "\n").encode())

    def _covered(self, rel: str) -> bool:
        """True when `rel` lies inside something this write created (undo removes it whole)."""
        while rel:
            if rel in self._created:
                return True
            rel = os.path.dirname(rel)
        return False

    def _remember(self, rel: str) -> None:
        """Record how to restore `rel` as it is now (content, link target, or absence)."""
        if self._journal is None or self._covered(rel):
            return
        path = self._p(rel)
        if os.path.islink(path):
            self._record({"op": "link", "path": rel, "target": os.readlink(path)})
        elif os.path.isfile(path):
            with open(path, "rb") as fh:
                data = fh.read()
            self._record({"op": "file", "path": rel, "data": data.decode("latin-1"),
                          "mode": os.stat(path).st_mode & 0o7777})
        elif not os.path.lexists(path):
            self._record({"op": "absent", "path": rel})
            self._created.add(rel)

    def recover(self) -> bool:
        """Roll back a write whose writer died; True if there was one. Cheap when there is none."""
        if not os.path.isdir(self._journal_dir):
            return False
        with FileLock(self._p(LOCK)):  # a live writer holds it: wait for its commit
            return self._recover_locked()

    def _recover_locked(self) -> bool:
        undo_path = os.path.join(self._journal_dir, "undo")
        if not os.path.isdir(self._journal_dir):
            return False
        try:
            with open(undo_path) as fh:
                entries = [json.loads(line) for line in fh if line.endswith("\n")]
        except (OSError, ValueError):
            entries = []
        done_path = os.path.join(self._journal_dir, "undone")
        try:
            with open(done_path) as fh:
                done = int(fh.read() or 0)
        except (OSError, ValueError):
            done = 0
        for n, entry in enumerate(reversed(entries)):
            if n < done:
                continue  # undone by a recovery that was itself interrupted
            self._undo(entry)
            with open(done_path, "w") as fh:
                fh.write(str(n + 1))
        _remove_tree(self._journal_dir)
        self._stamp = None
        self._log("recover", b"", f"rolled back {len(entries)} change(s) of a killed write")
        return True

    def _undo(self, entry: Dict[str, Any]) -> None:
        path = self._p(entry["path"])
        if entry["op"] == "stash":
            stash = os.path.join(self._journal_dir, "stash", entry["stash"])
            if os.path.lexists(stash):
                self._remove_any(path)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                os.rename(stash, path)
            return
        self._remove_any(path)
        if entry["op"] == "link":
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.symlink(entry["target"], path)
        elif entry["op"] == "file":
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as fh:
                fh.write(entry["data"].encode("latin-1"))
            os.chmod(path, entry["mode"])

    @staticmethod
    def _remove_any(path: str) -> None:
        if os.path.islink(path) or os.path.isfile(path):
            os.unlink(path)
        elif os.path.isdir(path):
            _remove_tree(path)

    def _log(self, rel: str, data: bytes, result: str) -> None:
        with open(self._p(LOG), "a") as fh:
            fh.write(f"{rel}\t{data.decode('latin-1')!r}\t{result}\n")

    # ------------------------------------------------------------ device lookups (the links in the tree)

    def dev_dir(self, bdf: str) -> Optional[str]:
        link = self._p(f"sys/bus/pci/devices/{bdf}")
        if not os.path.lexists(link):
            return None
        known = self._dirs.get(bdf) if self._journal is not None else None  # cached within one write
        if known is None:
            known = os.path.relpath(os.path.realpath(link), self.root)
            if self._journal is not None:
                self._dirs[bdf] = known
        return known

    def driver_of(self, bdf: str) -> Optional[str]:
        d = self.dev_dir(bdf)
        try:
            return os.path.basename(os.readlink(self._p(f"{d}/driver"))) if d else None
        except OSError:
            return None

    def _pf_of(self, bdf: str) -> Optional[str]:
        d = self.dev_dir(bdf)
        try:
            return os.path.basename(os.readlink(self._p(f"{d}/physfn"))) if d else None
        except OSError:
            return None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """The model's lock, a recovery of any killed writer, and an undo journal for this change."""
        with FileLock(self._p(LOCK)):  # waits as long as another writer writes, as the kernel's locks do
            self._recover_locked()
            self._load()
            self._begin()
            self._dirty = False
            try:
                yield  # a kernel error is a finished write too: only a dead writer leaves the journal
            finally:
                if self._dirty:  # a counter moved (the next ifindex) with no other model change saved
                    self._save()
                self._commit()

    def _link_name(self, rel: str) -> Optional[str]:
        try:
            return os.path.basename(os.readlink(self._p(rel)))
        except OSError:
            return None

    def _listdir(self, rel: str) -> List[str]:
        try:
            return sorted(os.listdir(self._p(rel)))
        except OSError:
            return []

    def _link_target(self, rel: str) -> Optional[str]:
        try:
            return os.readlink(self._p(rel))
        except OSError:
            return None

    def write_log(self) -> List[Tuple[str, str, str]]:
        """(path, value repr, result) for every write the model received."""
        try:
            with open(self._p(LOG)) as fh:
                return [tuple(line.rstrip("\n").split("\t")) for line in fh]  # type: ignore[misc]
        except FileNotFoundError:
            return []

#!/usr/bin/env python3
"""A slow disk for bench/run.sh: a FUSE pass-through of SOURCE at MOUNTPOINT whose
fsync and fdatasync (of files and of directories) each take SYNC_MS (the real sync, then
a sleep for the rest), as on an SD card. Unlike strace's delay injection it stops no
other system call, so the agent's threads run at full speed between syncs (what a
dm-delay device would give, which this kernel lacks).

usage: python3 bench/slowfs.py SOURCE MOUNTPOINT SYNC_MS   (as root; needs libfuse2 and
       pip's fusepy; stays in the foreground until `umount MOUNTPOINT`)
"""

import errno
import os
import sys
import time

from fuse import FUSE, FuseOSError, Operations


class SlowSync(Operations):
    def __init__(self, root, sync_s):
        self.root = os.path.realpath(root)
        self.sync_s = sync_s

    def _path(self, path):
        return self.root + path

    def __call__(self, op, path, *args):
        try:
            return super().__call__(op, self._path(path), *args)
        except OSError as err:
            raise FuseOSError(err.errno or errno.EIO) from err

    def _slow(self, sync, fd):
        # The disk's own sync counts towards the delay: each sync takes sync_s in all.
        start = time.monotonic()
        sync(fd)
        time.sleep(max(0.0, self.sync_s - (time.monotonic() - start)))

    def access(self, path, mode):
        if not os.access(path, mode):
            raise FuseOSError(errno.EACCES)

    chmod = os.chmod
    readlink = os.readlink
    rmdir = os.rmdir
    mkdir = os.mkdir
    unlink = os.unlink

    def chown(self, path, uid, gid):
        os.lchown(path, uid, gid)

    def create(self, path, mode, fi=None):
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)

    def getattr(self, path, fh=None):
        st = os.fstat(fh) if fh is not None else os.lstat(path)
        keys = ("st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime", "st_nlink",
                "st_size", "st_uid", "st_ino")
        return {k: getattr(st, k) for k in keys}

    def open(self, path, flags):
        return os.open(path, flags)

    def read(self, path, size, offset, fh):
        return os.pread(fh, size, offset)

    def write(self, path, data, offset, fh):
        return os.pwrite(fh, data, offset)

    def truncate(self, path, length, fh=None):
        if fh is not None:
            os.ftruncate(fh, length)
        else:
            os.truncate(path, length)

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        os.close(fh)

    def fsync(self, path, datasync, fh):
        self._slow(os.fdatasync if datasync else os.fsync, fh)

    def fsyncdir(self, path, datasync, fh):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self._slow(os.fsync, fd)
        finally:
            os.close(fd)

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(path)

    def rename(self, old, new):
        os.rename(old, self._path(new))

    def link(self, target, source):
        os.link(self._path(source), target)

    def symlink(self, target, source):
        os.symlink(source, target)

    def statfs(self, path):
        st = os.statvfs(path)
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree",
                "f_files", "f_flag", "f_frsize", "f_namemax")
        return {k: getattr(st, k) for k in keys}

    def utimens(self, path, times=None):
        os.utime(path, times)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    source, mountpoint, sync_ms = sys.argv[1], sys.argv[2], float(sys.argv[3])
    FUSE(SlowSync(source, sync_ms / 1000), mountpoint, foreground=True, nothreads=False,
         allow_other=True, default_permissions=True, use_ino=True)


if __name__ == "__main__":
    main()

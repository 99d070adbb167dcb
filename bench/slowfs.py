#!/usr/bin/env python3
"""A slow disk for bench/run.sh: a FUSE file system at MOUNTPOINT holding files in
SOURCE (run.sh keeps one disk image there, under a loop device) whose fsync and
fdatasync each take SYNC_MS (the real sync, then a sleep for the rest); the loop device
on top sends its flushes one at a time, as a card takes them. Unlike strace's delay injection it
stops no other system call, so the agent's threads run at full speed between syncs (what
a dm-delay device would give, which this kernel lacks). Only what creating, sizing,
using and deleting such an image needs is here.

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

    def __call__(self, op, path, *args):
        try:
            return super().__call__(op, self.root + path, *args)
        except OSError as err:
            raise FuseOSError(err.errno or errno.EIO) from err

    def getattr(self, path, fh=None):
        st = os.fstat(fh) if fh is not None else os.lstat(path)
        keys = ("st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime", "st_nlink",
                "st_size", "st_uid", "st_ino")
        return {k: getattr(st, k) for k in keys}

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(path)

    def create(self, path, mode, fi=None):
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)

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
        # The disk's own sync counts towards the delay: each sync takes sync_s in all.
        start = time.monotonic()
        (os.fdatasync if datasync else os.fsync)(fh)
        time.sleep(max(0.0, self.sync_s - (time.monotonic() - start)))

    def unlink(self, path):
        os.unlink(path)

    def statfs(self, path):
        st = os.statvfs(path)
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree",
                "f_files", "f_flag", "f_frsize", "f_namemax")
        return {k: getattr(st, k) for k in keys}


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    source, mountpoint, sync_ms = sys.argv[1], sys.argv[2], float(sys.argv[3])
    FUSE(SlowSync(source, sync_ms / 1000), mountpoint, foreground=True, nothreads=False,
         allow_other=True, default_permissions=True, use_ino=True)


if __name__ == "__main__":
    main()

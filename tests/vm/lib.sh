#!/usr/bin/env bash
# What tests/vm/run.sh (x86-64, systemd) and tests/vm/aarch64.sh (arm64) share: the
# fleet's helpers, a temp dir removed with the VM, and the verdict read off the serial
# console. Sourced, not run.
source tests/fleet/lib.sh # CACHE, say, fail, skip, debian_mirror

started=$SECONDS
step() { printf '\n--- [%ds] %s\n' "$((SECONDS - started))" "$*"; }

VM=$(mktemp -d /tmp/sudo-agent-vm.XXXXXX)
QEMU_PID=""
vm_cleanup() {
    local rc=$?
    [ -n "$QEMU_PID" ] && kill -KILL "$QEMU_PID" 2>/dev/null
    mountpoint -q "$VM/root/proc" && umount "$VM/root/proc"
    rm -rf --one-file-system "$VM"
    return $rc
}
trap vm_cleanup EXIT
trap 'exit 130' INT TERM

# boot_vm QEMU ARGS...: runs the VM (console in $VM/console.log) until it powers off,
# at most 20 minutes.
boot_vm() {
    timeout 1200 "$@" -nographic -no-reboot </dev/null >"$VM/console.log" 2>&1 &
    QEMU_PID=$!
    wait "$QEMU_PID" || true
    QEMU_PID=""
}

# The VMTEST lines the guest printed; a failure unless its last says none failed.
vm_verdict() {
    tr -d '\r' <"$VM/console.log" | grep -a '^VMTEST' || true
    if ! grep -aq '^VMTEST done: [0-9]* ok, 0 failed' "$VM/console.log" ||
        grep -aq '^VMTEST FAIL' "$VM/console.log"; then
        echo "--- the console's last lines:" >&2
        tr -d '\r' <"$VM/console.log" | tail -n 60 >&2
        fail "$0: the checks inside the VM did not all pass"
    fi
    step "done: every check passed inside the VM"
}

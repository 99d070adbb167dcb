#!/bin/busybox sh
# /init of the arm64 virtual machine tests/vm/aarch64.sh boots: Debian's arm64 kernel,
# this busybox and the static aarch64 sudo-agent, nothing else. Mounts cgroup2 alone
# (pure v2, every controller, as on a Pi), starts the agent, sends it jobs with its own
# `run` client and busybox's wget, and prints VMTEST lines on the console.
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp /run /root /etc/sudo-agent /var/lib /var/log
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup
echo "+memory +pids +cpu" >/sys/fs/cgroup/cgroup.subtree_control
ip link set lo up
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >/etc/passwd
printf 'root:x:0:\nnogroup:x:65534:\n' >/etc/group

OK=0 FAILED=0
check() { # WHAT STATUS DETAIL
    if [ "$2" = 0 ]; then
        OK=$((OK + 1))
        echo "VMTEST ok: $1"
    else
        FAILED=$((FAILED + 1))
        echo "VMTEST FAIL: $1: $3"
    fi
}
# stdin not a terminal: no code asked for (no_pin rules).
run() { sudo-agent run --json --wait 60 -- "$@" </dev/null 2>&1; }

echo "VMTEST start: $(uname -m) $(uname -r)"
grep -qw memory /sys/fs/cgroup/cgroup.controllers
check "pure cgroup v2 with the memory controller" $? "$(cat /sys/fs/cgroup/cgroup.controllers)"

sudo-agent init --config /etc/sudo-agent/config.json --uri-file /root/uri >/dev/null 2>&1
cp /etc/vmtest-config.json /etc/sudo-agent/config.json
chmod 600 /etc/sudo-agent/config.json
sudo-agent serve --config /etc/sudo-agent/config.json 2>/tmp/agent.log &
for _ in $(seq 150); do wget -q -O /tmp/health http://127.0.0.1:9999/health 2>/dev/null && break; sleep 0.2; done
health=$(cat /tmp/health 2>/dev/null)
echo "$health" | grep -q '"memory": *true'
check "busybox wget gets /health; job cgroups have memory" $? "$health $(cat /tmp/agent.log)"
! grep -q "move themselves into their cgroups" /tmp/agent.log
check "clone3 (the aarch64 trampoline) starts jobs in their cgroups" $? "$(cat /tmp/agent.log)"

out=$(run /bin/cat /proc/self/cgroup)
echo "$out" | grep -Eq '"stdout": *"0::/sudo-agent/job-[0-9a-f]{16}\\n"'
check "a job runs in a cgroup of its own" $? "$out"

out=$(run /bin/touch /root/written)
[ ! -e /root/written ] && echo "$out" | grep -q "Read-only file system"
check "a no_pin job is read-only" $? "$out"

out=$(run /usr/local/bin/hog)
echo "$out" | grep -Eq '"killed_by": *"memory_limit"'
check "memory_max: the job is killed and says so" $? "$out"

out=$(run /usr/local/bin/limits)
echo "$out" | grep -Fq '67108864\n16\n50000 100000'
check "limits are written to the job's cgroup" $? "$out"

out=$(run /usr/local/bin/forks)
echo "$out" | grep -q "can't fork"
check "tasks_max: forks past it fail" $? "$out"

out=$(run /usr/local/bin/escape)
echo "$out" | grep -Eq '"status": *"timed_out"' && [ -z "$(pgrep sleep)" ]
check "timeout: the job and its setsid escapee are gone" $? "$out; left: $(pgrep -l sleep)"

echo "VMTEST done: $OK ok, $FAILED failed"
poweroff -f

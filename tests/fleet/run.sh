#!/usr/bin/env bash
# The packages and the rollout, end to end, with the real things: both .debs built
# and checked (dpkg-deb, lintian); the amd64 one installed, used and purged in a
# booted Debian container; then the Ansible role (ansible-core from PyPI) run from
# this machine over SSH against three booted containers and one host that is not
# there. Every container, mount and process is gone when it ends, failed or not.
#
# Needs root, debootstrap, systemd-nspawn, lintian, dpkg-deb, oathtool, curl, ssh.
# A missing one is a loud skip, or a failure with CI=true.
#
# usage: tests/fleet/run.sh [deb|ansible]...   (default: both)
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
source tests/fleet/lib.sh

phases=("$@")
[ ${#phases[@]} -gt 0 ] || phases=(deb ansible)
started=$SECONDS
step() { printf '\n--- [%ds] %s\n' "$((SECONDS - started))" "$*"; }

[ "$(id -u)" = 0 ] || skip "needs root (mounts, systemd-nspawn)"
for tool in debootstrap systemd-nspawn nsenter lintian dpkg-deb oathtool curl ssh ssh-keygen flock; do
    command -v "$tool" >/dev/null ||
        skip "$tool is missing (apt-get install debootstrap systemd-container lintian oathtool curl openssh-client)"
done

VERSION=$(sed -n '/^\[package\]/,/^\[/s/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
DEB_VERSION=${VERSION//-/\~}
HOST_BIN="$REPO/dist/sudo-agent-x86_64-unknown-linux-musl"

# in_net NAME COMMAND...: COMMAND from this machine, inside NAME's network namespace
# (curl to the container's own 127.0.0.1).
in_net() {
    local name=$1
    shift
    nsenter -t "$(cat "$WORK/$name/leader")" -n "$@"
}

# http NAME METHOD URL [BODY]: "<status> <body>" as a client on that box sees it
# (status 000 when nothing answered).
http() {
    local name=$1 method=$2 url=$3 body=${4:-} out
    out=$(in_net "$name" curl -sS -m 30 -w '\n%{http_code}' -X "$method" \
        ${body:+--data-binary "$body"} "$url" 2>&1 || true)
    printf '%s %s\n' "${out##*$'\n'}" "$(tr '\n' ' ' <<<"${out%$'\n'*}")"
}

expect() { # WHAT PATTERN TEXT
    if ! grep -Eq -- "$2" <<<"$3"; then
        fail "$1: expected /$2/ in: $3"
    fi
    say "ok: $1"
}

secret_of() { tr -d '[:space:]' <"$(root_of "$1")/etc/sudo-agent/secret"; }
code_of() { oathtool --totp -b "$(secret_of "$1")"; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ---------------------------------------------------------------------------------
deb_phase() {
    step "build both packages (version $VERSION from Cargo.toml)"
    bash deploy/deb/build.sh arm64 amd64
    local deb arch
    for arch in arm64 amd64; do
        deb="dist/sudo-agent_${DEB_VERSION}_$arch.deb"
        step "dpkg-deb --info/--contents $deb"
        dpkg-deb --info "$deb"
        dpkg-deb --contents "$deb"
        expect "$arch: Architecture" "^$arch$" "$(dpkg-deb -f "$deb" Architecture)"
        local file
        dpkg-deb -x "$deb" "$WORK/unpacked-$arch"
        file=$(file "$WORK/unpacked-$arch/usr/bin/sudo-agent")
        local bin="$WORK/unpacked-$arch/usr/bin/sudo-agent"
        case $arch in
            arm64)
                expect "$arch: binary" "ARM aarch64.*(statically|static-pie) linked" "$file"
                command -v qemu-aarch64-static >/dev/null || skip "qemu-aarch64-static is missing (apt-get install qemu-user-static)"
                expect "$arch: runs (qemu)" "^sudo-agent $VERSION$" "$(qemu-aarch64-static "$bin" --version)"
                ;;
            amd64)
                expect "$arch: binary" "x86-64.*(statically|static-pie) linked" "$file"
                expect "$arch: runs" "^sudo-agent $VERSION$" "$("$bin" --version)"
                ;;
        esac
        for unit in systemd/*; do
            expect "$arch: packages $unit" "usr/lib/systemd/system/${unit#systemd/}$" "$(dpkg-deb --contents "$deb")"
        done
    done
    step "lintian (errors, warnings and info fail; each override is explained in deploy/deb/lintian-overrides)"
    lintian --fail-on error,warning,info --info --pedantic --display-experimental \
        "dist/sudo-agent_${DEB_VERSION}_arm64.deb" "dist/sudo-agent_${DEB_VERSION}_amd64.deb"
    say "ok: lintian clean"

    step "install the amd64 package in a booted Debian container"
    boot pkg --private-network
    deb="sudo-agent_${DEB_VERSION}_amd64.deb"
    cp "dist/$deb" "$(root_of pkg)/root/"
    local out
    out=$(in_ pkg apt-get install -y "/root/$deb" 2>&1)
    rm "$(root_of pkg)/root/$deb"
    echo "$out" | tail -n 6
    expect "postinst names the next step" 'run `sudo sudo-agent init`' "$out"
    expect "installed" "^install ok installed $DEB_VERSION$" "$(in_ pkg dpkg-query -W -f='${Status} ${Version}' sudo-agent)"
    expect "socket enabled" "^enabled$" "$(in_ pkg systemctl is-enabled sudo-agent.socket)"
    expect "socket listening" "^active$" "$(in_ pkg systemctl is-active sudo-agent.socket)"
    expect "socket on 127.0.0.1:9999" "127.0.0.1:9999" "$(in_ pkg systemctl show -P Listen sudo-agent.socket)"
    expect "units run /usr/bin/sudo-agent" "path=/usr/bin/sudo-agent " "$(in_ pkg systemctl show -P ExecStart sudo-agent.service)"
    expect "agent not started before a request" "^inactive$" "$(in_ pkg systemctl is-active sudo-agent.service || true)"
    expect "modes" "^700 /etc/sudo-agent 600 /etc/sudo-agent/config.json 700 /var/lib/sudo-agent 640 /var/log/sudo-agent.log $" \
        "$(in_ pkg stat -c '%a %n' /etc/sudo-agent /etc/sudo-agent/config.json /var/lib/sudo-agent /var/log/sudo-agent.log | tr '\n' ' ')"
    [ ! -e "$(root_of pkg)/etc/sudo-agent/secret" ] || fail "postinst made a secret"
    say "ok: no secret until the owner makes one"

    step "a request before init: no secret, so systemd gives up on the socket"
    http pkg GET http://127.0.0.1:9999/health >/dev/null || true
    local i
    for i in $(seq 60); do
        in_ pkg systemctl is-failed --quiet sudo-agent.socket && break
        sleep 1
    done
    expect "socket failed after five failed starts" "^failed$" "$(in_ pkg systemctl is-active sudo-agent.socket || true)"

    step "sudo-agent init: the secret, and the socket back"
    out=$(in_ pkg sudo-agent init 2>&1)
    expect "init shows the URI naming the box" "otpauth://totp/sudo-agent:pkg\\?secret=" "$out"
    expect "socket listening again" "^active$" "$(in_ pkg systemctl is-active sudo-agent.socket)"
    expect "first request starts the agent" '^200 .*"status":"ok"' "$(http pkg GET http://127.0.0.1:9999/health)"
    expect "agent running (socket activation)" "^active$" "$(in_ pkg systemctl is-active sudo-agent.service)"
    expect "wrong code refused" '^401 .*invalid_code' \
        "$(http pkg POST http://127.0.0.1:9999/run '{"pin":"000000","argv":["df","-h","/"]}')"
    local code
    code=$(code_of pkg)
    expect "coded request runs (code from oathtool)" '^200 .*"status":"succeeded".*Filesystem' \
        "$(http pkg POST http://127.0.0.1:9999/run "{\"pin\":\"$code\",\"argv\":[\"df\",\"-h\",\"/\"]}")"
    expect "the same code again is refused" '^401 ' \
        "$(http pkg POST http://127.0.0.1:9999/run "{\"pin\":\"$code\",\"argv\":[\"df\",\"-h\",\"/\"]}")"
    expect "audit log" "EXECUTING \\[" "$(cat "$(root_of pkg)/var/log/sudo-agent.log")"
    # Delegate=yes: the agent takes its service's cgroup over (itself in .../agent, each
    # job in .../job-<key>), and a no_pin rule runs read-only in a mount namespace.
    expect "jobs get cgroups below the service (Delegate=yes)" \
        '"cgroup":"/sys/fs/cgroup/[^"]*system\.slice/sudo-agent\.service"' \
        "$(http pkg GET http://127.0.0.1:9999/health)"
    expect "the agent moved into its leaf" '^0::/system\.slice/sudo-agent\.service/agent$' \
        "$(in_ pkg sh -c 'grep "^0::" /proc/$(systemctl show -P MainPID sudo-agent.service)/cgroup')"
    expect "a no_pin job runs, read-only, in a cgroup of its own" \
        '^200 .*"status":"succeeded".*load average' \
        "$(http pkg POST http://127.0.0.1:9999/run '{"command":"uptime"}')"

    step "reinstall (upgrade path): the owner's config and the secret stay, the agent restarts"
    local pid secret sum
    pid=$(in_ pkg systemctl show -P MainPID sudo-agent.service)
    secret=$(secret_of pkg)
    sed -i 's/"rules": \[/"idle_exit_s": 3600,\n  "rules": [/' "$(root_of pkg)/etc/sudo-agent/config.json"
    sum=$(sha256sum <"$(root_of pkg)/etc/sudo-agent/config.json")
    cp "dist/$deb" "$(root_of pkg)/root/"
    in_ pkg dpkg -i "/root/$deb" >/dev/null 2>&1
    rm "$(root_of pkg)/root/$deb"
    [ "$(sha256sum <"$(root_of pkg)/etc/sudo-agent/config.json")" = "$sum" ] || fail "the upgrade changed the owner's config"
    [ "$(secret_of pkg)" = "$secret" ] || fail "the upgrade changed the secret"
    say "ok: config and secret untouched"
    expect "agent restarted on the new binary" "^[0-9]+$" "$(in_ pkg systemctl show -P MainPID sudo-agent.service | grep -vx "$pid" | grep -vx 0)"
    expect "still serving" '^200 ' "$(http pkg GET http://127.0.0.1:9999/health)"

    step "apt-get purge: nothing left behind (and a planted link in /tmp not followed)"
    # The results directory aged away and a local user put a link in its place.
    in_ pkg rm -rf /tmp/sudo-agent
    in_ pkg install -d -m 0755 /srv/victim
    in_ pkg touch /srv/victim/keep
    in_ pkg runuser -u nobody -- ln -s /srv/victim /tmp/sudo-agent
    in_ pkg apt-get purge -y sudo-agent >/dev/null 2>&1
    [ -e "$(root_of pkg)/srv/victim/keep" ] || fail "purge followed the link in /tmp"
    in_ pkg test -L /tmp/sudo-agent || fail "purge removed the user's link"
    say "ok: the link and what it points at are untouched"
    in_ pkg rm -rf /tmp/sudo-agent /srv/victim
    local left
    left=$(in_ pkg find / \( -path /proc -o -path /sys -o -path /dev \) -prune -o -name '*sudo-agent*' -print)
    echo "what remains named *sudo-agent*: ${left:-nothing}"
    [ -z "$left" ] || fail "purge left: $left"
    expect "package gone" "^$" "$(in_ pkg dpkg-query -W -f='${Status}' sudo-agent 2>/dev/null | grep -v not-installed || true)"
    expect "no unit left" "^0 unit files listed" "$(in_ pkg systemctl list-unit-files 'sudo-agent*' | tail -n 1)"
    expect "nothing listens" "^000 " "$(http pkg GET http://127.0.0.1:9999/health)"
}

# ---------------------------------------------------------------------------------
ansible_phase() {
    step "ansible-core from PyPI (a venv cached in $CACHE)"
    local venv="$CACHE/ansible-venv" spec='ansible-core~=2.19.0'
    if [ "$(cat "$venv/.spec" 2>/dev/null)" != "$spec" ]; then
        rm -rf "$venv"
        python3 -m venv "$venv" || skip "python3 -m venv failed (apt-get install python3-venv)"
        "$venv/bin/pip" install -q "$spec" || skip "pip install $spec failed"
        echo "$spec" >"$venv/.spec"
    fi
    "$venv/bin/python" -c 'import ansible.release as r; print("ansible-core", r.__version__)'
    bash cross/build-release.sh x86_64-unknown-linux-musl >/dev/null
    [ -f "dist/sudo-agent_${DEB_VERSION}_amd64.deb" ] || bash deploy/deb/build.sh amd64

    step "three containers with sshd on their own loopback ports, and one host that is not there"
    mkdir -p "$WORK/ssh" "$WORK/ansible"
    ssh-keygen -q -t ed25519 -N '' -C fleet-ci -f "$WORK/ssh/id_ed25519"
    : >"$WORK/ssh/known_hosts"
    local hosts=(box1 box2 box3) name
    declare -gA SSH_PORT AGENT_PORT
    for name in "${hosts[@]}" ghost; do
        SSH_PORT[$name]=$(free_port)
        AGENT_PORT[$name]=$(free_port)
    done
    [ "$(printf '%s\n' "${SSH_PORT[@]}" "${AGENT_PORT[@]}" | sort -u | wc -l)" = 8 ] ||
        fail "free ports collided; run again"
    for name in "${hosts[@]}"; do
        boot_box "$name"
    done
    local inventory="$WORK/inventory.yml"
    {
        echo "sudo_agents:"
        echo "  hosts:"
        for name in "${hosts[@]}" ghost; do
            echo "    $name: {ansible_port: ${SSH_PORT[$name]}, sudo_agent_listen: \"127.0.0.1:${AGENT_PORT[$name]}\"}"
        done
        echo "  vars:"
        echo "    ansible_host: 127.0.0.1"
        echo "    ansible_user: owner"
        echo "    ansible_python_interpreter: /usr/bin/python3"
        echo "    ansible_ssh_private_key_file: $WORK/ssh/id_ed25519"
        echo "    ansible_ssh_common_args: -o UserKnownHostsFile=$WORK/ssh/known_hosts -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes -o ConnectTimeout=10"
        echo "    sudo_agent_enrol_dir: $WORK/enrol"
    } >"$inventory"
    # box3 has no dpkg as far as the role knows: the static binary and `install`.
    sed -i "s/^    box3: {/    box3: {sudo_agent_install_method: binary, /" "$inventory"
    cat "$inventory"

    step "run 1: converge (ghost is unreachable)"
    playbook 1 || true
    recap 1
    for name in "${hosts[@]}"; do
        expect "$name converged" "^$name +: ok=[0-9]+ +changed=[1-9][0-9]* +unreachable=0 +failed=0 " "$(recap 1 "$name")"
    done
    expect "ghost reported unreachable and skipped" "^ghost +: ok=0 +changed=0 +unreachable=1 +failed=0 " "$(recap 1 ghost)"
    expect "ghost's failure named" "ghost.*UNREACHABLE" "$(cat "$WORK/ansible/run1.log")"

    declare -gA PID
    local secrets=() uri
    for name in "${hosts[@]}"; do
        local url="http://127.0.0.1:${AGENT_PORT[$name]}"
        expect "$name serves /health inside" '^200 .*"status":"ok"' "$(http "$name" GET "$url/health")"
        expect "$name: a coded request runs" '^200 .*"status":"succeeded"' \
            "$(http "$name" POST "$url/run" "{\"pin\":\"$(code_of "$name")\",\"argv\":[\"df\",\"-h\",\"/\"]}")"
        PID[$name]=$(in_ "$name" systemctl show -P MainPID sudo-agent.service)
        secrets+=("$(secret_of "$name")")
        uri="$WORK/enrol/$name.uri"
        expect "$name: URI fetched, mode 0600" "^600$" "$(stat -c %a "$uri")"
        expect "$name: URI holds the box's secret, labelled sudo-agent:$name" \
            "^otpauth://totp/sudo-agent:$name\\?secret=$(secret_of "$name")&" "$(cat "$uri")"
        expect "$name: sudo-agent qr shows it" "scan this for sudo-agent:$name" "$("$HOST_BIN" qr "$uri")"
    done
    expect "enrolment dir 0700" "^700$" "$(stat -c %a "$WORK/enrol")"
    [ "$(printf '%s\n' "${secrets[@]}" | sort -u | wc -l)" = 3 ] || fail "two boxes share a secret"
    say "ok: three boxes, three secrets"
    expect "box1's code does not open box2" '^401 ' \
        "$(http box2 POST "http://127.0.0.1:${AGENT_PORT[box2]}/run" "{\"pin\":\"$(code_of box1)\",\"argv\":[\"df\",\"-h\",\"/\"]}")"

    step "run 2: nothing to change"
    playbook 2 || true
    for name in "${hosts[@]}"; do
        expect "$name unchanged" "^$name +: ok=[0-9]+ +changed=0 +unreachable=0 +failed=0 " "$(recap 2 "$name")"
        expect "$name: agent not restarted" "^${PID[$name]}$" "$(in_ "$name" systemctl show -P MainPID sudo-agent.service)"
    done

    step "run 3: a policy with a mistake fails validation everywhere and changes nothing"
    local sums=()
    for name in "${hosts[@]}"; do sums+=("$(sha256sum <"$(root_of "$name")/etc/sudo-agent/config.json")"); done
    cat >"$WORK/bad-policy.yml" <<'EOF'
sudo_agent_rules:
  - {name: disk, argv: [/usr/bin/df, -h, "**"]}
  - {name: reboot, argv: [reboot]}
EOF
    playbook 3 -e "@$WORK/bad-policy.yml" || true
    local i=0
    for name in "${hosts[@]}"; do
        expect "$name failed" "^$name +: ok=[0-9]+ +changed=0 +unreachable=0 +failed=1 " "$(recap 3 "$name")"
        [ "$(sha256sum <"$(root_of "$name")/etc/sudo-agent/config.json")" = "${sums[$i]}" ] ||
            fail "$name: the bad policy reached the config"
        i=$((i + 1))
        expect "$name: running agent untouched" "^${PID[$name]}$" "$(in_ "$name" systemctl show -P MainPID sudo-agent.service)"
        expect "$name still serves" '^200 ' "$(http "$name" GET "http://127.0.0.1:${AGENT_PORT[$name]}/health")"
    done
    expect "the check's reason is in the output" "absolute path" "$(cat "$WORK/ansible/run3.log")"

    step "run 4: a changed policy lands and restarts the agents; box2 moves to another port"
    cat >"$WORK/new-policy.yml" <<'EOF'
sudo_agent_rules:
  - {name: disk, argv: [/usr/bin/df, -h, "**"]}
  - {name: whoami, argv: [/usr/bin/id, -un], no_pin: true}
EOF
    local old_port=${AGENT_PORT[box2]}
    AGENT_PORT[box2]=$(free_port)
    sed -i "s/127.0.0.1:$old_port\"/127.0.0.1:${AGENT_PORT[box2]}\"/" "$inventory"
    playbook 4 -e "@$WORK/new-policy.yml" || true
    expect "box2's old port is closed" "^000 " "$(http box2 GET "http://127.0.0.1:$old_port/health")"
    for name in "${hosts[@]}"; do
        expect "$name changed" "^$name +: ok=[0-9]+ +changed=[1-9][0-9]* +unreachable=0 +failed=0 " "$(recap 4 "$name")"
        expect "$name: the new rule is live" '^200 .*"stdout":"root\\n"' \
            "$(http "$name" POST "http://127.0.0.1:${AGENT_PORT[$name]}/run" '{"command":"id -un"}')"
        expect "$name: agent restarted" "^[0-9]+$" "$(in_ "$name" systemctl show -P MainPID sudo-agent.service | grep -vx "${PID[$name]}" | grep -vx 0)"
    done

    step "no host's secret in any playbook output"
    local logs=("$WORK/ansible/"*.log)
    i=0
    for name in "${hosts[@]}"; do
        if grep -qiF -- "${secrets[$i]}" "${logs[@]}"; then
            fail "$name's secret appears in the playbook output"
        fi
        say "ok: $name's secret in none of the ${#logs[@]} logs"
        i=$((i + 1))
    done
}

# boot_box NAME: a container on the host's network with sshd on its own port and an
# ordinary user `owner` (sudo without password) who logs in with this run's key.
boot_box() {
    local name=$1 root
    boot "$name"
    root=$(root_of "$name")
    printf 'Port %s\nListenAddress 127.0.0.1\nPasswordAuthentication no\n' "${SSH_PORT[$name]}" \
        >"$root/etc/ssh/sshd_config.d/fleet.conf"
    in_ "$name" useradd -m -s /bin/bash owner
    install -d -m 0700 "$root/home/owner/.ssh"
    install -m 0600 "$WORK/ssh/id_ed25519.pub" "$root/home/owner/.ssh/authorized_keys"
    in_ "$name" chown -R owner:owner /home/owner/.ssh
    echo 'owner ALL=(ALL) NOPASSWD: ALL' >"$root/etc/sudoers.d/owner"
    chmod 0440 "$root/etc/sudoers.d/owner"
    in_ "$name" systemctl restart ssh
    echo "[127.0.0.1]:${SSH_PORT[$name]} $(cut -d' ' -f1,2 "$root/etc/ssh/ssh_host_ed25519_key.pub")" \
        >>"$WORK/ssh/known_hosts"
    say "$name: sshd on 127.0.0.1:${SSH_PORT[$name]}, agent to listen on 127.0.0.1:${AGENT_PORT[$name]}"
}

# playbook N [ARGS...]: runs the sample playbook, output to run<N>.log and here. With
# -v and --diff every task's result and every file change is in the log, so the
# check that no secret is in it covers everything Ansible would show.
playbook() {
    local n=$1 t0=$SECONDS rc=0
    shift
    (
        cd "$WORK/ansible"
        ANSIBLE_HOME="$WORK/ansible" ANSIBLE_LOCAL_TEMP="$WORK/ansible/tmp" \
            ANSIBLE_NOCOLOR=1 ANSIBLE_RETRY_FILES_ENABLED=false ANSIBLE_PIPELINING=true \
            ANSIBLE_DEPRECATION_WARNINGS=false \
            "$CACHE/ansible-venv/bin/ansible-playbook" -v --diff -i "$WORK/inventory.yml" \
            "$REPO/deploy/ansible/site.yml" "$@"
    ) >"$WORK/ansible/run$n.log" 2>&1 || rc=$?
    # What failed, with Ansible's reason (expected for ghost, and in run 3).
    grep -E '^(fatal|failed):' "$WORK/ansible/run$n.log" | cut -c1-600 || true
    sed -n '/PLAY RECAP/,$p' "$WORK/ansible/run$n.log"
    say "run $n: exit $rc in $((SECONDS - t0)) s (log: run$n.log)"
    if [ "${FLEET_VERBOSE:-}" = 1 ] || ! grep -q "PLAY RECAP" "$WORK/ansible/run$n.log"; then
        cat "$WORK/ansible/run$n.log"
    fi
    return $rc
}

# recap N [HOST]: run N's recap, or HOST's line of it.
recap() {
    local lines
    lines=$(sed -n '/PLAY RECAP/,$p' "$WORK/ansible/run$1.log" | grep -E '^[a-z0-9]+ +: ')
    [ -n "$lines" ] || { cat "$WORK/ansible/run$1.log"; fail "run $1 has no recap"; }
    if [ $# -gt 1 ]; then grep -E "^$2 " <<<"$lines"; fi
}

ensure_base
for phase in "${phases[@]}"; do
    start_fleet
    case $phase in
        deb) deb_phase ;;
        ansible) ansible_phase ;;
        *) fail "unknown phase $phase (deb, ansible)" ;;
    esac
    cleanup_fleet
done
step "fleet tests passed in $((SECONDS - started)) s"

#!/usr/bin/env bash
# Builds dist/sudo-agent_<version>_<arch>.deb for arm64 and amd64 (or the Debian
# architectures named) with dpkg-deb from a small staging tree: the static musl
# binary that cross/build-release.sh makes, every unit file in systemd/ (pointed at
# /usr/bin), the maintainer scripts beside this file, a man page from `--help`, the
# README, copyright and changelog. The version is Cargo.toml's.
#
# usage: deploy/deb/build.sh [arm64] [amd64]
set -euo pipefail
cd "$(dirname "$0")/../.."
here=deploy/deb

arches=("$@")
[ ${#arches[@]} -gt 0 ] || arches=(arm64 amd64)

target_of() {
    case "$1" in
        arm64) echo aarch64-unknown-linux-musl ;;
        amd64) echo x86_64-unknown-linux-musl ;;
        *) echo "no musl target known for Debian architecture $1 (arm64, amd64)" >&2; exit 2 ;;
    esac
}

# Cargo's version, as Debian orders it: a pre-release 1.2.0-rc.1 sorts before 1.2.0
# only when written 1.2.0~rc.1.
version=$(sed -n '/^\[package\]/,/^\[/s/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[ -n "$version" ] || { echo "no version in Cargo.toml's [package]" >&2; exit 1; }
deb_version=${version//-/\~}
# Debian's synopsis must stay under 80 characters; Cargo.toml's description is longer.
synopsis="allowlisted root commands over loopback HTTP, each gated by a TOTP code"
maintainer=${DEB_MAINTAINER:-$(git log -1 --format='%an <%ae>' 2>/dev/null || true)}
[ -n "$maintainer" ] || { echo "set DEB_MAINTAINER='Name <email>'" >&2; exit 1; }
# Reproducible: file dates and the changelog date are the commit's.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
first=$(git log --max-parents=0 --format=%cd --date=format:%Y HEAD 2>/dev/null | tail -n 1)
last=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y)
years=${first:-$last}
[ "$years" = "$last" ] || years="$years-$last"

# Every unit file in systemd/: whatever the tree holds at build time.
units=()
for file in systemd/*; do
    [ -f "$file" ] || continue
    case "$file" in
        *.service | *.socket | *.timer | *.path | *.target | *.slice) units+=("${file#systemd/}") ;;
        *) echo "systemd/${file#systemd/} is not a unit file this script knows how to package" >&2; exit 1 ;;
    esac
done
sockets=() services=()
for unit in "${units[@]}"; do
    case "$unit" in
        *.socket) sockets+=("$unit") ;;
        *.service) services+=("$unit") ;;
    esac
done
[ ${#sockets[@]} -gt 0 ] || { echo "no .socket unit in systemd/ to enable" >&2; exit 1; }

targets=()
for arch in "${arches[@]}"; do targets+=("$(target_of "$arch")"); done
# Cargo rebuilds only what changed, so this is quick when CI has just built them.
BUILDER=${BUILDER:-cargo} bash cross/build-release.sh "${targets[@]}" >/dev/null

# The man page is the binary's own --help, so it cannot drift from it; any of the
# binaries this machine can run will do (the text is the same for every target).
help=""
for target in "${targets[@]}" x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
    help=$("dist/sudo-agent-$target" --help 2>/dev/null) && break
    help=$(qemu-aarch64-static "dist/sudo-agent-$target" --help 2>/dev/null) && break
done
[ -n "$help" ] || { echo "cannot run any built binary for its --help (man page)" >&2; exit 1; }

stage_root=target/deb
rm -rf "$stage_root"
mkdir -p dist
for arch in "${arches[@]}"; do
    target=$(target_of "$arch")
    stage="$stage_root/$arch"
    doc="$stage/usr/share/doc/sudo-agent"
    install -d -m 0755 "$stage/DEBIAN" "$stage/usr/bin" "$stage/usr/lib/systemd/system" \
        "$doc" "$stage/usr/share/man/man1"
    install -m 0755 "dist/sudo-agent-$target" "$stage/usr/bin/sudo-agent"

    for unit in "${units[@]}"; do
        # `sudo-agent install` puts the binary in /usr/local/bin; a package owns /usr/bin.
        sed 's#/usr/local/bin/sudo-agent#/usr/bin/sudo-agent#g' "systemd/$unit" \
            >"$stage/usr/lib/systemd/system/$unit"
        chmod 0644 "$stage/usr/lib/systemd/system/$unit"
        if grep -n '/usr/local/' "$stage/usr/lib/systemd/system/$unit" >&2; then
            echo "systemd/$unit still names /usr/local/ after the rewrite" >&2
            exit 1
        fi
    done

    for script in postinst prerm postrm; do
        sed -e "s/#SOCKETS#/${sockets[*]}/" -e "s/#SERVICES#/${services[*]}/" \
            "$here/$script" >"$stage/DEBIAN/$script"
        chmod 0755 "$stage/DEBIAN/$script"
    done

    sed "s/#YEARS#/$years/" "$here/copyright" >"$doc/copyright"
    gzip -9n <README.md >"$doc/README.md.gz"
    {
        printf 'sudo-agent (%s) unstable; urgency=medium\n\n' "$deb_version"
        printf '  * sudo-agent %s, built from the repository; changes are in its git log.\n\n' "$version"
        printf ' -- %s  %s\n' "$maintainer" "$(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")"
    } | gzip -9n >"$doc/changelog.gz"
    {
        printf '.TH SUDO-AGENT 1 "%s" "sudo-agent %s" "User Commands"\n' \
            "$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)" "$version"
        printf '.SH NAME\nsudo-agent \\- %s\n' "$synopsis"
        printf '.SH SYNOPSIS\n.nf\n'
        # roff: a backslash is \e, and a line must not start with . or '.
        printf '%s\n' "$help" | sed -e 's/\\/\\e/g' -e "s/^\([.']\)/\\\\\&\1/"
        printf '.fi\n.SH FILES\n.TP\n/etc/sudo-agent/config.json\nconfig and policy (not a conffile: written by postinst only when absent)\n'
        printf '.TP\n/etc/sudo-agent/secret\nthe TOTP secret, made by \\fBsudo sudo-agent init\\fR\n'
        printf '.TP\n/var/lib/sudo-agent\nstate: used codes, lockouts, job journal\n'
        printf '.TP\n/var/log/sudo-agent.log\naudit log\n'
        printf '.SH SEE ALSO\n/usr/share/doc/sudo-agent/README.md.gz\n'
    } | gzip -9n >"$stage/usr/share/man/man1/sudo-agent.1.gz"
    if [ -f "$here/lintian-overrides" ]; then
        install -d -m 0755 "$stage/usr/share/lintian/overrides"
        install -m 0644 "$here/lintian-overrides" "$stage/usr/share/lintian/overrides/sudo-agent"
    fi
    chmod 0644 "$doc"/* "$stage/usr/share/man/man1/sudo-agent.1.gz"

    cat >"$stage/DEBIAN/control" <<EOF
Package: sudo-agent
Version: $deb_version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $(du -sk --exclude=DEBIAN "$stage" | cut -f1)
Section: admin
Priority: optional
Description: $synopsis
 One small static binary that lets local services and AI assistants run root
 commands over loopback HTTP, but only when a human supplies a fresh TOTP code
 from their phone, and only commands the owner's allowlist names.
 .
 The package enables sudo-agent.socket (127.0.0.1:9999); systemd starts the
 agent on the first request. Run "sudo sudo-agent init" to make the secret and
 scan its QR code.
EOF
    (cd "$stage" && find usr -type f -print0 | sort -z | xargs -0 md5sum >DEBIAN/md5sums)
    chmod 0644 "$stage/DEBIAN/md5sums" "$stage/DEBIAN/control"
    find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    out="dist/sudo-agent_${deb_version}_$arch.deb"
    # One package per architecture in dist/, so a rollout cannot pick a stale one.
    rm -f dist/sudo-agent_*_"$arch".deb
    dpkg-deb --root-owner-group -Zxz --build "$stage" "$out" >/dev/null
    printf '%s: %s bytes\n' "$out" "$(stat -c %s "$out")"
done

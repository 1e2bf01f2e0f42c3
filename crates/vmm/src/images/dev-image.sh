#!/bin/sh
# The `dev` image's customize step, run by mmdebstrap on the host with the new root
# filesystem as $1 (its /proc, /sys and /dev mounted): the coding-agent CLIs from npm at
# the pinned versions the build passes in $ATELIER_NPM, a Node that satisfies all of
# them, and a record of what is inside with versions.
set -eu
root="$1"
# Everything to stderr, where the build reads its progress from.
exec 1>&2

chroot "$root" useradd --create-home --uid 1000 --shell /bin/bash dev
echo 'dev ALL=(ALL) NOPASSWD:ALL' > "$root/etc/sudoers.d/dev"

# npm on the host installs into the guest's /usr/local: packages under lib/node_modules,
# their commands linked in /usr/local/bin (ahead of /usr/bin on the guest's PATH). The
# install scripts pick each package's linux-x64 binary, the guest's platform too.
# shellcheck disable=SC2086 # one word per package
npm install --global --prefix "$root/usr/local" --no-audit --no-fund --loglevel=error $ATELIER_NPM

# What is inside, one "name<TAB>version" per line, read back by the build for
# `atelier image show` and kept in the guest at /etc/atelier-image/contents.
mkdir -p "$root/etc/atelier-image"
out="$root/etc/atelier-image/contents"
: > "$out"
probe() {
    name="$1"
    shift
    version=$(timeout 120 chroot "$root" env HOME=/root PATH=/usr/local/bin:/usr/bin:/bin "$@" 2>/dev/null \
        | grep -Eo '[0-9]+\.[0-9]+(\.[0-9]+)?' | head -n 1) || true
    printf '%s\t%s\n' "$name" "${version:-missing}" >> "$out"
}
probe debian cat /etc/debian_version
probe node node --version
probe npm npm --version
probe python3 python3 --version
probe pip pip3 --version
probe go go version
probe rustc rustc --version
probe cargo cargo --version
probe gcc gcc --version
probe git git --version
probe gh gh --version
probe ripgrep rg --version
probe opencode opencode --version
probe codex codex --version
probe claude claude --version
probe gemini gemini --version
for pkg in $ATELIER_NPM; do
    name="${pkg%@*}"
    printf 'npm:%s\t%s\n' "$name" "${pkg##*@}" >> "$out"
done

rm -rf "$root/var/cache/apt/archives"/*.deb "$root/var/lib/apt/lists"/* "$root/root/.npm"

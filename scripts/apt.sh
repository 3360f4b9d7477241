# Sourced by the setup scripts (lab/setup.sh, packaging/setup.sh): Debian packages
# installed only when missing, `apt-get update` at most once and only when needed.
# The caller defines log() and APTLOG.

have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo); fi

# apt-get update only if needed (never-updated lists, or a package is unknown).
apt_updated=0
apt_update_once() {
    if [ "$apt_updated" -eq 0 ]; then
        log "apt-get update"
        "${SUDO[@]}" apt-get update -qq >>"$APTLOG" 2>&1
        apt_updated=1
    fi
}

apt_install() {
    if ! DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "$@" >>"$APTLOG" 2>&1; then
        if [ "$apt_updated" -eq 1 ]; then tail -n 30 "$APTLOG" >&2; return 1; fi
        apt_update_once
        DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "$@" >>"$APTLOG" 2>&1 \
            || { tail -n 30 "$APTLOG" >&2; return 1; }
    fi
}


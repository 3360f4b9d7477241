//! `--netconsole`: a kernel netconsole target beside `--kmsg`, aimed at the same
//! receiver, so that what the kernel prints after user space stopped (the oops, the
//! panic) still leaves the machine. Set up through configfs
//! (`/sys/kernel/config/netconsole/`): the interface, the source address and the
//! next hop's MAC come from the routing and neighbour tables (the HELLO already sent
//! primes the neighbour entry). Extended format, with the kernel release when the
//! running kernel offers it. Removed when ncu-send ends cleanly; kept when it is
//! killed (that is the point). Every failure is one line on stderr, and shipping
//! with `--kmsg` goes on. IPv4 only.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where the kernel's netconsole takes targets.
const CONFIGFS: &str = "/sys/kernel/config";
/// The UDP port the kernel's netconsole sends from.
pub(crate) const LOCAL_PORT: u16 = 6665;
/// How often the path is looked at again (a route or neighbour that changed, an
/// interface that went down and up).
const RECHECK: Duration = Duration::from_secs(5);

/// Where the kernel's datagrams go, and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Path4 {
    pub(crate) dev: String,
    pub(crate) local: Ipv4Addr,
    pub(crate) remote: SocketAddrV4,
    pub(crate) remote_mac: String,
}

/// A netconsole target of ours in configfs.
pub(crate) struct Target {
    dir: PathBuf,
    path: Path4,
    checked: Instant,
}

impl Target {
    /// Sets up a target to `remote` from `local` (the address ncu-send's own socket
    /// sends from). `None` (after one line on stderr) when it cannot be.
    pub(crate) fn start(remote: SocketAddr, local: Option<SocketAddr>) -> Option<Target> {
        match Target::try_start(remote, local) {
            Ok(t) => {
                eprintln!(
                    "ncu-send: netconsole: the kernel sends its log too, from {}:{LOCAL_PORT} \
                     on {} to {} (next hop {})",
                    t.path.local, t.path.dev, t.path.remote, t.path.remote_mac
                );
                Some(t)
            }
            Err(why) => {
                eprintln!("ncu-send: netconsole: {why}; shipping with --kmsg goes on");
                None
            }
        }
    }

    fn try_start(remote: SocketAddr, local: Option<SocketAddr>) -> Result<Target, String> {
        // SAFETY: geteuid(2) cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err(
                "not root: netconsole targets are made in configfs, which only root \
                        may change (run ncu-send as root, as its unit does)"
                    .to_owned(),
            );
        }
        let path = find_path(remote, local)?;
        let root = netconsole_dir()?;
        let dir = root.join(format!("ncu-{}", std::process::id()));
        fs::create_dir(&dir)
            .or_else(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(|e| format!("cannot make a target in {}: {e}", root.display()))?;
        let target = Target {
            dir,
            path,
            checked: Instant::now(),
        };
        if let Err(e) = target.configure() {
            target.remove();
            return Err(e);
        }
        Ok(target)
    }

    /// Writes the target's settings and enables it.
    fn configure(&self) -> Result<(), String> {
        let p = &self.path;
        let set = |name: &str, value: &str| {
            fs::write(self.dir.join(name), value)
                .map_err(|e| format!("{}: {e}", self.dir.join(name).display()))
        };
        set("enabled", "0").ok();
        set("dev_name", &p.dev)?;
        set("local_ip", &p.local.to_string())?;
        set("local_port", &LOCAL_PORT.to_string())?;
        set("remote_ip", &p.remote.ip().to_string())?;
        set("remote_port", &p.remote.port().to_string())?;
        set("remote_mac", &p.remote_mac)?;
        set("extended", "1")?;
        // What the running kernel offers beyond that (each optional).
        for extra in [
            "release",
            "userdata/release_enabled",
            "sysdata/release_enabled",
            "sysdata/msgid_enabled",
            "sysdata/taskname_enabled",
            "sysdata/cpu_nr_enabled",
        ] {
            if self.dir.join(extra).exists() {
                let _ = set(extra, "1");
            }
        }
        set("enabled", "1").map_err(|e| format!("cannot enable the target ({e})"))
    }

    /// The address the kernel's netconsole sends from.
    pub(crate) fn source(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.path.local, LOCAL_PORT))
    }

    /// Looks at the path again every few seconds; a change (route, neighbour,
    /// interface) rewrites the target. True when the source address changed.
    pub(crate) fn recheck(&mut self, now: Instant, local: Option<SocketAddr>) -> bool {
        if now < self.checked + RECHECK {
            return false;
        }
        self.checked = now;
        let Ok(path) = find_path(SocketAddr::V4(self.path.remote), local) else {
            return false; // no path now: the kernel keeps the last one
        };
        let moved = path.local != self.path.local;
        if path != self.path {
            eprintln!(
                "ncu-send: netconsole: the path changed ({} via {} to {} via {}); updating",
                self.path.dev, self.path.remote_mac, path.dev, path.remote_mac
            );
            self.path = path;
            if let Err(e) = self.configure() {
                eprintln!("ncu-send: netconsole: {e}");
            }
        }
        moved
    }

    /// At a clean end: the target goes.
    pub(crate) fn remove(&self) {
        let _ = fs::write(self.dir.join("enabled"), "0");
        let _ = fs::remove_dir(&self.dir);
    }
}

/// `/sys/kernel/config/netconsole`, mounting configfs and loading the module when
/// needed.
fn netconsole_dir() -> Result<PathBuf, String> {
    let root = Path::new(CONFIGFS);
    let dir = root.join("netconsole");
    if dir.is_dir() {
        return Ok(dir);
    }
    if !root.join("netconsole").exists() {
        let _ = Command::new("modprobe")
            .arg("netconsole")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    if !dir.is_dir() && root.is_dir() && fs::read_dir(root).is_ok_and(|mut d| d.next().is_none()) {
        mount_configfs();
    }
    if dir.is_dir() {
        return Ok(dir);
    }
    if !root.is_dir() {
        return Err(format!(
            "no configfs at {CONFIGFS} (a kernel without CONFIG_CONFIGFS_FS?)"
        ));
    }
    Err(format!(
        "no {} (load the netconsole module: modprobe netconsole; its dynamic targets \
         need CONFIG_NETCONSOLE_DYNAMIC)",
        dir.display()
    ))
}

fn mount_configfs() {
    let none = c"none";
    let target = c"/sys/kernel/config";
    let kind = c"configfs";
    // SAFETY: NUL-terminated strings and no data; a failure only leaves it unmounted.
    unsafe {
        libc::mount(
            none.as_ptr(),
            target.as_ptr(),
            kind.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
}

/// The path to `remote` from the tables in /proc.
fn find_path(remote: SocketAddr, local: Option<SocketAddr>) -> Result<Path4, String> {
    let SocketAddr::V4(remote) = remote else {
        return Err("the kernel's netconsole here takes IPv4 destinations only".into());
    };
    if remote.ip().is_loopback() {
        // The local routing table (not in /proc/net/route) sends it through lo,
        // which netconsole cannot use.
        return Err(format!(
            "{} is a loopback address: the kernel's netconsole sends through an \
             Ethernet device only",
            remote.ip()
        ));
    }
    let routes =
        fs::read_to_string("/proc/net/route").map_err(|e| format!("/proc/net/route: {e}"))?;
    let (dev, gateway) =
        route(&routes, *remote.ip()).ok_or_else(|| format!("no route to {}", remote.ip()))?;
    usable(&dev)?;
    let hop = gateway.unwrap_or(*remote.ip());
    let local = match local {
        Some(SocketAddr::V4(a)) if !a.ip().is_unspecified() => *a.ip(),
        _ => return Err("no source address (ncu-send's socket is not connected)".into()),
    };
    // The neighbour entry: the HELLO already sent asked for it; wait a little.
    let deadline = Instant::now() + Duration::from_secs(2);
    let remote_mac = loop {
        let arp = fs::read_to_string("/proc/net/arp").unwrap_or_default();
        if let Some(mac) = neighbour(&arp, hop, &dev) {
            break mac;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no neighbour entry for {hop} on {dev} (no ARP reply)"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(Path4 {
        dev,
        local,
        remote,
        remote_mac,
    })
}

/// Whether netconsole can send through `dev`: an Ethernet device that is not a
/// bridge (netconsole needs a device with a NAPI poll of its own), not loopback.
fn usable(dev: &str) -> Result<(), String> {
    let sys = Path::new("/sys/class/net").join(dev);
    if sys.join("bridge").exists() {
        return Err(format!(
            "{dev} is a bridge, which netconsole cannot send through"
        ));
    }
    match fs::read_to_string(sys.join("type")).map(|t| t.trim().to_owned()) {
        Ok(t) if t == "1" => Ok(()),
        Ok(t) => Err(format!(
            "{dev} is not an Ethernet device (type {t}: a tunnel or loopback), which \
             netconsole cannot send through"
        )),
        Err(_) => Ok(()),
    }
}

/// The route to `to` in /proc/net/route's text: the longest prefix (then the lowest
/// metric) among the routes that are up; its device and gateway.
fn route(table: &str, to: Ipv4Addr) -> Option<(String, Option<Ipv4Addr>)> {
    let hex = |s: &str| u32::from_str_radix(s, 16).ok();
    let to = u32::from_ne_bytes(to.octets());
    let mut best: Option<(u32, u32, String, u32)> = None;
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let (Some(dest), Some(gw), Some(flags), Some(metric), Some(mask)) = (
            hex(f[1]),
            hex(f[2]),
            hex(f[3]),
            f[6].parse::<u32>().ok(),
            hex(f[7]),
        ) else {
            continue;
        };
        if flags & 1 == 0 || to & mask != dest {
            continue;
        }
        let len = mask.count_ones();
        let better = best
            .as_ref()
            .is_none_or(|b| len > b.0 || (len == b.0 && metric < b.1));
        if better {
            best = Some((len, metric, f[0].to_owned(), gw));
        }
    }
    let (_, _, dev, gw) = best?;
    let gateway = (gw != 0).then(|| Ipv4Addr::from(gw.to_ne_bytes()));
    Some((dev, gateway))
}

/// The MAC of `ip` on `dev` in /proc/net/arp's text, when the entry is complete.
fn neighbour(table: &str, ip: Ipv4Addr, dev: &str) -> Option<String> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let complete = f
            .get(2)
            .and_then(|x| u32::from_str_radix(x.trim_start_matches("0x"), 16).ok())
            .is_some_and(|flags| flags & 0x2 != 0);
        (f.len() >= 6
            && f[0] == ip.to_string()
            && f[5] == dev
            && complete
            && f[3] != "00:00:00:00:00:00")
            .then(|| f[3].to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &str = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0202000A\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth1\t00000000\t0101A8C0\t0003\t0\t0\t50\t00000000\t0\t0\t0
eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth2\t0000000A\t00000000\t0000\t0\t0\t0\t000000FF\t0\t0\t0
";

    #[test]
    fn routes_by_longest_prefix_then_metric() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(route(ROUTES, ip("10.0.2.2")), Some(("eth0".into(), None)));
        // The default route with the lower metric; its gateway is the next hop.
        assert_eq!(
            route(ROUTES, ip("8.8.8.8")),
            Some(("eth1".into(), Some(ip("192.168.1.1"))))
        );
        // eth2's route is down (flags without RTF_UP).
        assert_eq!(
            route(ROUTES, ip("10.9.9.9")),
            Some(("eth1".into(), Some(ip("192.168.1.1"))))
        );
        assert_eq!(route("Iface\n", ip("10.0.2.2")), None);
    }

    #[test]
    fn neighbours_complete_entries_only() {
        let arp = "\
IP address       HW type     Flags       HW address            Mask     Device
10.0.2.2         0x1         0x2         52:55:0a:00:02:02     *        eth0
10.0.2.3         0x1         0x0         00:00:00:00:00:00     *        eth0
10.0.2.4         0x1         0x2         aa:bb:cc:dd:ee:ff     *        eth1
";
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            neighbour(arp, ip("10.0.2.2"), "eth0").as_deref(),
            Some("52:55:0a:00:02:02")
        );
        assert_eq!(neighbour(arp, ip("10.0.2.3"), "eth0"), None, "incomplete");
        assert_eq!(
            neighbour(arp, ip("10.0.2.4"), "eth0"),
            None,
            "another device"
        );
    }
}

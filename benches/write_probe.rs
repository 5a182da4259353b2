//! Physical-limit probe: how many small socket writes one core can make over loopback.
//!
//! Opens N loopback TCP connections. The accepted side of each (the side that stands for the
//! server) is written by ONE thread, round-robin, one `libc::write(2)` of a B-byte frame per
//! socket per round; the connecting side (the clients) is drained by reader threads with epoll
//! (edge triggered, nonblocking reads into a 64 KiB buffer). After a 1 s warm-up it measures S
//! seconds and reports writes/s, bytes/s and the writer thread's CPU per write
//! (`CLOCK_THREAD_CPUTIME_ID`), the figure the end-to-end scenarios are divided by.
//!
//! Two reader modes (`--reader`), both counting how often the readers slept (their voluntary
//! context switches, from /proc) per write:
//!
//! * `busy` (the default, the probe's historical reader): one thread drains every socket epoll
//!   reports, up to 1,024 per `epoll_wait`, which waits 50 ms at most. Behind an unpaced
//!   writer it finds data almost every time it comes back (0.01 sleeps per write measured),
//!   so a write seldom has a sleeping reader to wake: the socket is usually already on epoll's
//!   ready list and the reader running on its core.
//! * `sleep`: `--readers` K threads, each with its own epoll over every K-th socket, block in
//!   `epoll_wait` without a timeout as clients do. With the writer paced (`--rate`, in bursts
//!   at `--tick-hz` like a server's tick) below what they read, most writes find their reader
//!   asleep, and the writer's CPU per write includes waking it (on loopback the sender's own
//!   softirq runs the receive path and the wake-up, a cross-core IPI in a VM).
//!
//! Writer sockets are nonblocking: a write that would block is skipped and counted
//! (`would_block`), so a reader that falls behind shows up instead of stalling the writer.
//!
//! ```sh
//! cargo bench --bench write_probe -- --connections 1000 --frame-bytes 1800 --seconds 5
//! target/release/deps/write_probe-* --connections 10000 --frame-bytes 100 --json probe.json
//! target/release/deps/write_probe-* --connections 2000 --frame-bytes 431 \
//!     --reader sleep --readers 4 --rate 120000 --tick-hz 60
//! ```

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::thread::JoinHandleExt;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser};
use client_sim::toolkit::host;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const WARM_UP: Duration = Duration::from_secs(1);
const MAX_SECONDS: f64 = 60.0;
const READ_BUF: usize = 64 * 1024;
/// File descriptors beyond the 2×N sockets: stdio, the listener, epoll, cargo's, the JSON file.
const FD_SLACK: u64 = 64;

/// Raw loopback write(2) probe: one thread writes a frame to each of N loopback sockets in
/// turn, another drains them.
#[derive(Parser, Debug, Clone)]
#[command(name = "write_probe")]
struct Args {
    /// Loopback TCP connections.
    #[arg(long, value_name = "N", default_value = "1000", value_parser = count)]
    connections: usize,
    /// Bytes per write(2).
    #[arg(long, value_name = "B", default_value = "1800", value_parser = count)]
    frame_bytes: usize,
    /// Write each frame with `writev(2)` of two slices, a WebSocket-sized header (up to 4
    /// bytes) and the rest, as the server's flushers do, instead of one `write(2)`.
    #[arg(long)]
    writev: bool,
    /// Measured seconds after a 1 s warm-up (at most 60).
    #[arg(long, value_name = "S", default_value_t = 5.0)]
    seconds: f64,
    /// Pin the writer thread to core C [default: 0].
    #[arg(long, value_name = "C", value_parser = count)]
    writer_cpu: Option<usize>,
    /// Pin the reader thread to core C [default: 1; not pinned on a 1-core machine].
    #[arg(long, value_name = "C", value_parser = count)]
    reader_cpu: Option<usize>,
    /// Pin neither thread.
    #[arg(long, conflicts_with_all = ["writer_cpu", "reader_cpu"])]
    no_pin: bool,
    /// Spread connections over source addresses 127.0.0.1..127.0.0.K.
    #[arg(long, value_name = "K", default_value = "1", value_parser = count)]
    source_ips: usize,
    /// Drain from a forked child process instead of a thread, so that each process holds N
    /// sockets, not 2×N (needed past RLIMIT_NOFILE / 2).
    #[arg(long)]
    reader_process: bool,
    /// How the reader side waits for data. `busy`: one thread that drains every socket it is
    /// told of and waits (50 ms at most) only when none has data; behind an unpaced writer it
    /// is nearly always running, so a write seldom has a sleeping reader to wake. `sleep`:
    /// `--readers` threads that block in `epoll_wait` without a timeout between wake-ups, as
    /// clients do; with `--rate` below what they can read, most writes wake one.
    #[arg(long, value_enum, default_value = "busy")]
    reader: ReaderMode,
    /// Reader threads (all on the reader core), each with its own epoll over a share of the
    /// sockets [default: 1].
    #[arg(long, value_name = "K", default_value = "1", value_parser = count)]
    readers: usize,
    /// Pace the writer at W writes/s over all sockets, in bursts of W ÷ H at `--tick-hz` H
    /// (a server's tick); 0 writes as fast as it can.
    #[arg(long, value_name = "W", default_value = "0", value_parser = count)]
    rate: usize,
    /// Bursts per second when `--rate` paces the writer.
    #[arg(long, value_name = "H", default_value_t = 1000.0)]
    tick_hz: f64,
    /// Also write the result as a JSON object to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<String>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// How the reader threads wait (see `--reader`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum ReaderMode {
    Busy,
    Sleep,
}

impl ReaderMode {
    fn name(self) -> &'static str {
        match self {
            ReaderMode::Busy => "busy",
            ReaderMode::Sleep => "sleep",
        }
    }

    /// `epoll_wait`'s timeout in ms: busy keeps the probe's historical 50 ms; sleep blocks
    /// until data (or the stop pipe) arrives.
    fn timeout_ms(self) -> libc::c_int {
        match self {
            ReaderMode::Busy => 50,
            ReaderMode::Sleep => -1,
        }
    }
}

/// The command line, pins defaulted for `cores` cores and checked; exits with clap's usage
/// error (status 2) when it is wrong.
fn parse_args(cores: usize) -> Args {
    let mut args = Args::parse();
    if args.no_pin {
        (args.writer_cpu, args.reader_cpu) = (None, None);
    } else {
        args.writer_cpu.get_or_insert(0);
        if args.reader_cpu.is_none() && cores > 1 {
            args.reader_cpu = Some(1);
        }
    }
    if let Err(e) = check(&args, cores) {
        Args::command()
            .error(clap::error::ErrorKind::ValueValidation, e)
            .exit();
    }
    args
}

fn check(args: &Args, cores: usize) -> Result<(), String> {
    if args.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    if args.frame_bytes == 0 {
        return Err("--frame-bytes must be at least 1".into());
    }
    if !(args.seconds > 0.0 && args.seconds <= MAX_SECONDS) {
        return Err(format!(
            "--seconds must be > 0 and at most {MAX_SECONDS} (got {})",
            args.seconds
        ));
    }
    if !(1..=MAX_READERS).contains(&args.readers) {
        return Err(format!("--readers must be between 1 and {MAX_READERS}"));
    }
    if args.readers > args.connections {
        return Err("--readers must not exceed --connections".into());
    }
    if !(args.tick_hz > 0.0 && args.tick_hz <= 100_000.0) {
        return Err("--tick-hz must be > 0 and at most 100000".into());
    }
    if !(1..=254).contains(&args.source_ips) {
        return Err("--source-ips must be between 1 and 254".into());
    }
    for (name, cpu) in [
        ("--writer-cpu", args.writer_cpu),
        ("--reader-cpu", args.reader_cpu),
    ] {
        if let Some(c) = cpu
            && c >= cores
        {
            return Err(format!(
                "{name} {c}: this machine has {cores} core(s) (0..{})",
                cores - 1
            ));
        }
    }
    Ok(())
}

/// A count, `_` allowed between digits (10_000).
fn count(v: &str) -> Result<usize, String> {
    v.replace('_', "")
        .parse()
        .map_err(|_| format!("not a non-negative integer: {v}"))
}

// ---------------------------------------------------------------------------------------------
// OS helpers (Linux).

fn cpu_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime({clock}) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Pins the calling thread to `cpu`.
fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes inside `set`; cpu is checked against the core count.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; set is a valid cpu_set_t of the size given.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

// ---------------------------------------------------------------------------------------------
// Setup.

fn listen() -> std::io::Result<(TcpListener, SockAddr)> {
    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    sock.bind(&SockAddr::from(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)))?;
    sock.listen(4096)?;
    let listener: TcpListener = sock.into();
    let addr = SockAddr::from(listener.local_addr()?);
    Ok((listener, addr))
}

/// Connects the client (reader) side of connection `i`.
fn connect_one(i: usize, target: &SockAddr, source_ips: usize) -> std::io::Result<TcpStream> {
    let src = Ipv4Addr::new(127, 0, 0, 1 + (i % source_ips) as u8);
    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    if source_ips > 1 {
        sock.bind(&SockAddr::from(SocketAddrV4::new(src, 0)))?;
    }
    sock.connect(target).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("connect #{i} from {src} to {:?}: {e}", target.as_socket()),
        )
    })?;
    let s: TcpStream = sock.into();
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Prepares the accepted (writer, "server") side of a connection.
fn writer_side(s: TcpStream) -> std::io::Result<TcpStream> {
    s.set_nodelay(true)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

fn progress(i: usize) {
    if (i + 1) % 5000 == 0 {
        eprintln!("write_probe: {} connections open", i + 1);
    }
}

/// Both ends in this process: returns (writer sides, reader sides).
fn connect_pairs(n: usize, source_ips: usize) -> std::io::Result<(Vec<TcpStream>, Vec<TcpStream>)> {
    let (listener, target) = listen()?;
    let mut writers = Vec::with_capacity(n);
    let mut readers = Vec::with_capacity(n);
    for i in 0..n {
        readers.push(connect_one(i, &target, source_ips)?);
        // One connection is pending at a time, so this accepts the one just made.
        writers.push(writer_side(listener.accept()?.0)?);
        progress(i);
    }
    Ok((writers, readers))
}

// ---------------------------------------------------------------------------------------------
// Reader: drains the client sockets with epoll, one or more threads, busy or sleeping.

/// epoll data of the stop pipe.
const STOP_TOKEN: u64 = u64::MAX;
/// Most reader threads (`--readers`).
const MAX_READERS: usize = 64;

/// What the readers share with the writer (in a MAP_SHARED page, so a forked reader process
/// shares it too): their counters, and their thread ids for /proc.
#[repr(C)]
struct ReaderShared {
    bytes_read: AtomicU64,
    /// `epoll_wait` calls that returned at least one socket event.
    waits: AtomicU64,
    /// Socket events those calls returned.
    events: AtomicU64,
    /// Linux thread ids of the readers (0 until a reader has started).
    tids: [AtomicI32; MAX_READERS],
}

/// The readers' shared page (MAP_SHARED anonymous), leaked for the run.
fn reader_shared() -> std::io::Result<&'static ReaderShared> {
    const _: () = assert!(std::mem::size_of::<ReaderShared>() <= 4096);
    // SAFETY: a fresh anonymous shared mapping of one page; no existing memory is touched.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the page is zeroed (all counters 0), aligned, never unmapped, and only used as
    // a ReaderShared, whose fields are all atomics.
    Ok(unsafe { &*(p as *const ReaderShared) })
}

/// A pipe whose write end, closed, tells every reader to stop (its read end hangs up in each
/// reader's epoll): (read end, write end).
fn stop_pipe() -> std::io::Result<(RawFd, RawFd)> {
    let mut pipe = [0 as RawFd; 2];
    // SAFETY: pipe is a valid array of two fds.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((pipe[0], pipe[1]))
}

/// The share of `fds` reader `k` of `readers` drains: every `readers`-th socket.
fn share(fds: &[RawFd], k: usize, readers: usize) -> Vec<RawFd> {
    fds.iter().skip(k).step_by(readers).copied().collect()
}

/// Starts `readers` threads on `cpu`, each draining its share of `fds` until `stop_fd`
/// hangs up.
fn spawn_readers(
    fds: &[RawFd],
    readers: usize,
    mode: ReaderMode,
    cpu: Option<usize>,
    stop_fd: RawFd,
    shared: &'static ReaderShared,
) -> std::io::Result<Vec<std::thread::JoinHandle<std::io::Result<()>>>> {
    (0..readers)
        .map(|k| {
            let mine = share(fds, k, readers);
            std::thread::Builder::new()
                .name(format!("probe-reader{k}"))
                .spawn(move || -> std::io::Result<()> {
                    // SAFETY: plain syscall.
                    let tid = unsafe { libc::gettid() };
                    shared.tids[k].store(tid, Ordering::Relaxed);
                    if let Some(c) = cpu {
                        pin_current_thread(c)?;
                    }
                    reader_loop(&mine, mode, stop_fd, shared)
                })
        })
        .collect()
}

/// Drains `fds` until `stop_fd` (a pipe's read end) hangs up.
fn reader_loop(
    fds: &[RawFd],
    mode: ReaderMode,
    stop_fd: RawFd,
    shared: &ReaderShared,
) -> std::io::Result<()> {
    // SAFETY: plain syscall.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let result = drain(ep, fds, mode, stop_fd, shared);
    // SAFETY: ep is ours and closed once.
    unsafe { libc::close(ep) };
    result
}

fn drain(
    ep: RawFd,
    fds: &[RawFd],
    mode: ReaderMode,
    stop_fd: RawFd,
    shared: &ReaderShared,
) -> std::io::Result<()> {
    let regs = fds
        .iter()
        .enumerate()
        .map(|(i, &fd)| (fd, (libc::EPOLLIN | libc::EPOLLET) as u32, i as u64))
        .chain(std::iter::once((stop_fd, libc::EPOLLIN as u32, STOP_TOKEN)));
    for (fd, events, token) in regs {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: ep and fd are open descriptors; ev is valid.
        if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let mut buf = vec![0u8; READ_BUF];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    loop {
        // SAFETY: events has room for events.len() entries.
        let n = unsafe {
            libc::epoll_wait(
                ep,
                events.as_mut_ptr(),
                events.len() as libc::c_int,
                mode.timeout_ms(),
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let mut read = 0u64;
        for ev in &events[..n as usize] {
            if ev.u64 == STOP_TOKEN {
                shared.bytes_read.fetch_add(read, Ordering::Relaxed);
                return Ok(());
            }
            let fd = fds[ev.u64 as usize];
            // Edge triggered: read until the socket is empty.
            loop {
                // SAFETY: buf is valid for buf.len() bytes; fd is open (owned by the caller).
                let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                if r > 0 {
                    read += r as u64;
                    if (r as usize) < buf.len() {
                        // Short read: the socket is (almost surely) empty; a later segment
                        // raises a fresh edge.
                        break;
                    }
                } else if r == 0 {
                    break; // peer closed
                } else if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
                {
                    continue;
                } else {
                    break; // WouldBlock (drained) or an error: nothing more to read now
                }
            }
        }
        if n > 0 {
            shared.bytes_read.fetch_add(read, Ordering::Relaxed);
            shared.waits.fetch_add(1, Ordering::Relaxed);
            shared.events.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// The readers' voluntary context switches so far (each one a sleep in `epoll_wait` that a
/// write, or the stop, ended), from /proc/`pid`/task/TID/status.
fn reader_sleeps(pid: libc::pid_t, shared: &ReaderShared) -> u64 {
    shared
        .tids
        .iter()
        .map(|t| t.load(Ordering::Relaxed))
        .filter(|&t| t > 0)
        .filter_map(|tid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).ok()?;
            status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum()
}

/// The readers in a forked child process (`--reader-process`): each process then holds only N
/// sockets, which gets past a per-process open-files limit of 2×N. Must be called while the
/// process has one thread. Returns the child's pid and the write end of its stop pipe; the
/// child connects the N clients, drains them, and exits when the pipe closes.
fn fork_reader(
    args: &Args,
    target: &SockAddr,
    shared: &'static ReaderShared,
) -> std::io::Result<(libc::pid_t, RawFd)> {
    let (stop_r, stop_w) = stop_pipe()?;
    // SAFETY: called before any other thread is started, so the child is a full copy.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid > 0 {
        // SAFETY: the read end belongs to the child.
        unsafe { libc::close(stop_r) };
        return Ok((pid, stop_w));
    }
    // Child.
    // SAFETY: the write end belongs to the parent; closing ours lets the pipe hang up.
    unsafe { libc::close(stop_w) };
    let result = (|| -> std::io::Result<()> {
        let streams = (0..args.connections)
            .map(|i| connect_one(i, target, args.source_ips))
            .collect::<std::io::Result<Vec<_>>>()?;
        let fds: Vec<RawFd> = streams.iter().map(|s| s.as_raw_fd()).collect();
        let threads = spawn_readers(
            &fds,
            args.readers,
            args.reader,
            args.reader_cpu,
            stop_r,
            shared,
        )?;
        for t in threads {
            t.join().expect("reader thread panicked")?;
        }
        Ok(())
    })();
    let code = match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("write_probe: reader process: {e}");
            1
        }
    };
    let _ = std::io::stderr().flush();
    // SAFETY: leave without running the parent's atexit handlers or destructors twice.
    unsafe { libc::_exit(code) }
}

/// Accepts N connections from the reader process, failing if it dies first.
fn accept_from_child(
    listener: &TcpListener,
    n: usize,
    child: libc::pid_t,
) -> std::io::Result<Vec<TcpStream>> {
    listener.set_nonblocking(true)?;
    let mut writers = Vec::with_capacity(n);
    while writers.len() < n {
        match listener.accept() {
            Ok((s, _)) => {
                writers.push(writer_side(s)?);
                progress(writers.len() - 1);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let mut pfd = libc::pollfd {
                    fd: listener.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: pfd is one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, 200) };
                let mut status = 0;
                // SAFETY: child is our child; status is writable.
                if unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) } == child {
                    return Err(std::io::Error::other(format!(
                        "the reader process exited after {} of {n} connections",
                        writers.len()
                    )));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(writers)
}

// ---------------------------------------------------------------------------------------------
// Writer: one thread, round-robin, one write(2) per socket per round.

#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    writes: u64,
    bytes: u64,
    would_block: u64,
    partial: u64,
    errors: u64,
}

impl Counters {
    fn minus(self, o: Counters) -> Counters {
        Counters {
            writes: self.writes - o.writes,
            bytes: self.bytes - o.bytes,
            would_block: self.would_block - o.would_block,
            partial: self.partial - o.partial,
            errors: self.errors - o.errors,
        }
    }
}

enum Reader {
    Threads {
        handles: Vec<std::thread::JoinHandle<std::io::Result<()>>>,
        stop_pipe: RawFd,
    },
    Process {
        pid: libc::pid_t,
        stop_pipe: RawFd,
    },
}

/// Where the writer reads the readers' figures: their CPU clocks (one per thread, or the
/// reader process's), the process that holds their threads, and their shared counters.
#[derive(Clone)]
struct ReaderProbe {
    clocks: Vec<libc::clockid_t>,
    pid: libc::pid_t,
    shared: &'static ReaderShared,
}

struct Snapshot {
    at: Instant,
    counters: Counters,
    writer_cpu_ns: u64,
    reader_cpu_ns: u64,
    process_cpu_ns: u64,
    bytes_read: u64,
    reader_sleeps: u64,
    reader_waits: u64,
    reader_events: u64,
    cores: Vec<host::CoreTicks>,
}

struct Window {
    wall: Duration,
    c: Counters,
    writer_cpu_ns: u64,
    reader_cpu_ns: u64,
    process_cpu_ns: u64,
    bytes_read: u64,
    /// The readers' sleeps in `epoll_wait` that ended in the window (voluntary switches).
    reader_sleeps: u64,
    /// `epoll_wait` calls that returned events, and the events they returned.
    reader_waits: u64,
    reader_events: u64,
    /// (busy, steal) ticks per core during the window.
    cores: Vec<(u64, u64)>,
}

/// How the writer paces itself: `per_tick` writes every `period` (fractions carried over),
/// or as fast as it can.
#[derive(Clone, Copy)]
struct Pace {
    period: Duration,
    per_tick: f64,
}

impl Pace {
    fn new(rate: usize, tick_hz: f64) -> Option<Pace> {
        (rate > 0).then(|| Pace {
            period: Duration::from_secs_f64(1.0 / tick_hz),
            per_tick: rate as f64 / tick_hz,
        })
    }
}

/// Writes between two looks at the clock when unpaced: ~0.3 % of their cost.
const UNPACED_BURST: u64 = 64;

fn writer_loop(
    fds: Vec<RawFd>,
    frame_bytes: usize,
    writev: bool,
    measure: Duration,
    cpu: Option<usize>,
    pace: Option<Pace>,
    readers: ReaderProbe,
) -> std::io::Result<Window> {
    if let Some(c) = cpu {
        pin_current_thread(c)?;
    }
    let frame = vec![0xA5u8; frame_bytes];
    let head = frame_bytes.min(4);
    let iov = [
        libc::iovec {
            iov_base: frame.as_ptr() as *mut libc::c_void,
            iov_len: head,
        },
        libc::iovec {
            // SAFETY: head <= frame.len(), so the pointer stays inside (or one past) frame.
            iov_base: unsafe { frame.as_ptr().add(head) } as *mut libc::c_void,
            iov_len: frame_bytes - head,
        },
    ];
    let snap = |c: Counters| Snapshot {
        at: Instant::now(),
        counters: c,
        writer_cpu_ns: cpu_ns(libc::CLOCK_THREAD_CPUTIME_ID),
        reader_cpu_ns: readers.clocks.iter().map(|&k| cpu_ns(k)).sum(),
        process_cpu_ns: cpu_ns(libc::CLOCK_PROCESS_CPUTIME_ID),
        bytes_read: readers.shared.bytes_read.load(Ordering::Relaxed),
        reader_sleeps: reader_sleeps(readers.pid, readers.shared),
        reader_waits: readers.shared.waits.load(Ordering::Relaxed),
        reader_events: readers.shared.events.load(Ordering::Relaxed),
        cores: host::core_ticks(),
    };
    let mut c = Counters::default();
    let start = Instant::now();
    let mut deadline = start + WARM_UP;
    let mut begin: Option<Snapshot> = None;
    let mut i = 0usize;
    let mut next_tick = start;
    let mut credit = 0.0f64;
    loop {
        let burst = match pace {
            None => UNPACED_BURST,
            Some(p) => {
                let now = Instant::now();
                if now < next_tick {
                    std::thread::sleep(next_tick - now);
                }
                next_tick += p.period;
                // A writer that fell more than a tick behind starts afresh instead of
                // bursting to catch up.
                let now = Instant::now();
                if now > next_tick + p.period {
                    next_tick = now;
                }
                credit += p.per_tick;
                let n = credit.floor();
                credit -= n;
                n as u64
            }
        };
        for _ in 0..burst {
            // The fd is open (owned by main).
            let r = if writev {
                // SAFETY: both iovecs point into frame, which outlives the call.
                unsafe { libc::writev(fds[i], iov.as_ptr(), 2) }
            } else {
                // SAFETY: frame is valid for frame.len() bytes.
                unsafe { libc::write(fds[i], frame.as_ptr().cast(), frame.len()) }
            };
            if r >= 0 {
                c.writes += 1;
                c.bytes += r as u64;
                if (r as usize) < frame.len() {
                    c.partial += 1;
                }
            } else {
                match std::io::Error::last_os_error().raw_os_error() {
                    Some(libc::EAGAIN) => c.would_block += 1,
                    Some(libc::EINTR) => {}
                    _ => c.errors += 1,
                }
            }
            i += 1;
            if i == fds.len() {
                i = 0;
            }
        }
        if Instant::now() >= deadline {
            match begin {
                None => {
                    let s = snap(c);
                    deadline = s.at + measure;
                    begin = Some(s);
                }
                Some(b) => {
                    let e = snap(c);
                    return Ok(Window {
                        wall: e.at - b.at,
                        c: e.counters.minus(b.counters),
                        writer_cpu_ns: e.writer_cpu_ns - b.writer_cpu_ns,
                        reader_cpu_ns: e.reader_cpu_ns - b.reader_cpu_ns,
                        process_cpu_ns: e.process_cpu_ns - b.process_cpu_ns,
                        bytes_read: e.bytes_read - b.bytes_read,
                        reader_sleeps: e.reader_sleeps - b.reader_sleeps,
                        reader_waits: e.reader_waits - b.reader_waits,
                        reader_events: e.reader_events - b.reader_events,
                        cores: (e.cores.iter().zip(&b.cores))
                            .map(|(e, b)| (e.busy - b.busy, e.steal - b.steal))
                            .collect(),
                    });
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------

fn main() -> ExitCode {
    let cores = host::usable_cores();
    let args = parse_args(cores);
    match run(&args, cores) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("write_probe: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args, cores: usize) -> std::io::Result<ExitCode> {
    let n = args.connections;
    let nofile = host::raise_nofile()?;
    let per_conn: u64 = if args.reader_process { 1 } else { 2 };
    let need = per_conn * n as u64 + FD_SLACK;
    if need > nofile {
        let hint = if !args.reader_process && n as u64 + FD_SLACK <= nofile {
            "; or pass --reader-process (the reader in its own process, N sockets each)"
        } else {
            ""
        };
        eprintln!(
            "write_probe: {n} connections need {need} file descriptors ({per_conn} per \
             connection + {FD_SLACK}) in this process, but RLIMIT_NOFILE allows {nofile} per \
             process (soft raised to hard).\n\
             A limit, not the machine, stops this run: use at most {} connections or raise the \
             hard limit{hint}.",
            (nofile.saturating_sub(FD_SLACK)) / per_conn
        );
        return Ok(ExitCode::from(3));
    }
    let ports_per_ip = 28_000usize; // the default ip_local_port_range is 32768..60999
    if n > ports_per_ip * args.source_ips {
        eprintln!(
            "write_probe: warning: {n} connections from {} source address(es) may run out of \
             ephemeral ports; pass --source-ips {}",
            args.source_ips,
            n.div_ceil(ports_per_ip)
        );
    }

    let shared = reader_shared()?;
    let setup = Instant::now();
    // The readers: threads of this process, or of a forked child (started before any thread).
    let (writers, clients, reader, probe) = if args.reader_process {
        let (listener, target) = listen()?;
        let (pid, stop_pipe) = fork_reader(args, &target, shared)?;
        let writers = match accept_from_child(&listener, n, pid) {
            Ok(w) => w,
            Err(e) => {
                // SAFETY: our pipe end and our child.
                unsafe {
                    libc::close(stop_pipe);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                return Err(e);
            }
        };
        let mut clock: libc::clockid_t = 0;
        // SAFETY: pid is our live child; clock is writable.
        let rc = unsafe { libc::clock_getcpuclockid(pid, &mut clock) };
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        let probe = ReaderProbe {
            clocks: vec![clock],
            pid,
            shared,
        };
        (
            writers,
            Vec::new(),
            Reader::Process { pid, stop_pipe },
            probe,
        )
    } else {
        let (writers, readers) = connect_pairs(n, args.source_ips)?;
        let fds: Vec<RawFd> = readers.iter().map(|s| s.as_raw_fd()).collect();
        let (stop_r, stop_w) = stop_pipe()?;
        let handles = spawn_readers(
            &fds,
            args.readers,
            args.reader,
            args.reader_cpu,
            stop_r,
            shared,
        )?;
        let clocks = handles
            .iter()
            .map(|h| {
                let mut clock: libc::clockid_t = 0;
                // SAFETY: the thread is alive until it is joined below; clock is writable.
                let rc = unsafe { libc::pthread_getcpuclockid(h.as_pthread_t(), &mut clock) };
                if rc == 0 {
                    Ok(clock)
                } else {
                    Err(std::io::Error::from_raw_os_error(rc))
                }
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let probe = ReaderProbe {
            clocks,
            // SAFETY: plain syscall.
            pid: unsafe { libc::getpid() },
            shared,
        };
        (
            writers,
            readers,
            Reader::Threads {
                handles,
                stop_pipe: stop_w,
            },
            probe,
        )
    };
    // Every reader has told its thread id before the writer starts (so the sleeps counted
    // are all of theirs from the first snapshot on).
    let started = Instant::now();
    while shared.tids[..args.readers]
        .iter()
        .any(|t| t.load(Ordering::Relaxed) == 0)
    {
        if started.elapsed() > Duration::from_secs(30) {
            return Err(std::io::Error::other(
                "the readers did not start within 30 s",
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let setup = setup.elapsed();
    let fds: Vec<RawFd> = writers.iter().map(|s| s.as_raw_fd()).collect();

    let measure = Duration::from_secs_f64(args.seconds);
    let pace = Pace::new(args.rate, args.tick_hz);
    let writer = {
        let (cpu, fb, wv) = (args.writer_cpu, args.frame_bytes, args.writev);
        std::thread::Builder::new()
            .name("probe-writer".into())
            .spawn(move || writer_loop(fds, fb, wv, measure, cpu, pace, probe))?
    };
    let window = writer.join().expect("writer thread panicked");
    let reader_result = match reader {
        Reader::Threads { handles, stop_pipe } => {
            // SAFETY: our pipe end; closing it hangs up every reader's stop descriptor.
            unsafe { libc::close(stop_pipe) };
            handles
                .into_iter()
                .map(|h| h.join().expect("reader thread panicked"))
                .collect::<std::io::Result<Vec<()>>>()
                .map(|_| ())
        }
        Reader::Process { pid, stop_pipe } => {
            let mut status = 0;
            // SAFETY: our pipe end (closing it stops the child) and our child.
            unsafe {
                libc::close(stop_pipe);
                libc::waitpid(pid, &mut status, 0);
            }
            if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::other(format!(
                    "the reader process failed (wait status {status})"
                )))
            }
        }
    };
    drop(writers);
    drop(clients);
    let w = window?;
    reader_result?;

    let secs = w.wall.as_secs_f64();
    let writes_per_s = w.c.writes as f64 / secs;
    let cpu_ns_per_write = if w.c.writes > 0 {
        w.writer_cpu_ns as f64 / w.c.writes as f64
    } else {
        f64::NAN
    };
    let writes_per_cpu_s = 1e9 / cpu_ns_per_write;
    let writer_pct = w.writer_cpu_ns as f64 / 1e9 / secs * 100.0;
    let reader_pct = w.reader_cpu_ns as f64 / 1e9 / secs * 100.0;
    // Both ends: this process, plus the reader's process when it has its own.
    let both_cpu_ns = w.process_cpu_ns
        + if args.reader_process {
            w.reader_cpu_ns
        } else {
            0
        };
    let process_pct = both_cpu_ns as f64 / 1e9 / secs * 100.0;
    let reader_mode = if args.reader_process {
        "process"
    } else {
        "thread"
    };
    let hz = host::ticks_per_second().max(1) as f64;
    let pct = |t: u64| t as f64 / hz / secs * 100.0;
    let busy_pct: Vec<f64> = w.cores.iter().map(|c| pct(c.0)).collect();
    let steal_pct: Vec<f64> = w.cores.iter().map(|c| pct(c.1)).collect();
    let on = |v: &[f64], c: Option<usize>| {
        c.and_then(|c| v.get(c))
            .map_or("-".to_string(), |p| format!("{p:.0} %"))
    };
    let model = host::cpu_model().unwrap_or_else(|| "unknown".into());
    let pin = |c: Option<usize>| c.map_or("-".to_string(), |c| c.to_string());
    let per_write = |x: u64| {
        if w.c.writes > 0 {
            x as f64 / w.c.writes as f64
        } else {
            f64::NAN
        }
    };
    let sleeps_per_write = per_write(w.reader_sleeps);
    let events_per_wait = if w.reader_waits > 0 {
        w.reader_events as f64 / w.reader_waits as f64
    } else {
        f64::NAN
    };
    let write_call = if args.writev {
        "libc::writev (4-byte head + rest)"
    } else {
        "libc::write"
    };
    let pacing = match args.rate {
        0 => "unpaced (as fast as it can)".to_string(),
        r => format!("paced at {r} writes/s in bursts at {} Hz", args.tick_hz),
    };

    println!(
        "write_probe: {n} loopback connections, {} B frames, {} from one thread, \
         {secs:.2} s measured after {} s warm-up (setup {:.2} s)",
        args.frame_bytes,
        write_call,
        WARM_UP.as_secs(),
        setup.as_secs_f64()
    );
    println!(
        "machine: {cores} core(s), {model}; writer on core {} ({pacing}), {} {} reader(s) in a \
         {reader_mode} on core {}; {} source IP(s)",
        pin(args.writer_cpu),
        args.readers,
        args.reader.name(),
        pin(args.reader_cpu),
        args.source_ips
    );
    let rows: [(&str, String); 15] = [
        ("writes", format!("{}", w.c.writes)),
        ("writes/s", format!("{writes_per_s:.0}")),
        (
            "bytes/s",
            format!("{:.1} MB/s", w.c.bytes as f64 / secs / 1e6),
        ),
        (
            "CPU ns per write (writer thread)",
            format!("{cpu_ns_per_write:.0}"),
        ),
        ("writes per CPU-second", format!("{writes_per_cpu_s:.0}")),
        (
            "would-block (skipped writes)",
            format!("{}", w.c.would_block),
        ),
        (
            "partial writes, errors",
            format!("{}, {}", w.c.partial, w.c.errors),
        ),
        ("writer thread CPU", format!("{writer_pct:.1} %")),
        (
            if args.reader_process {
                "reader process CPU"
            } else {
                "reader threads' CPU"
            },
            format!("{reader_pct:.1} %"),
        ),
        (
            "reader sleeps per write (voluntary csw)",
            format!("{sleeps_per_write:.3}"),
        ),
        (
            "socket events per epoll_wait",
            format!("{events_per_wait:.1}"),
        ),
        (
            "CPU of both ends (all threads)",
            format!("{process_pct:.1} %"),
        ),
        (
            "writer core busy, all tasks / steal",
            format!(
                "{} / {}",
                on(&busy_pct, args.writer_cpu),
                on(&steal_pct, args.writer_cpu)
            ),
        ),
        (
            "reader core busy, all tasks / steal",
            format!(
                "{} / {}",
                on(&busy_pct, args.reader_cpu),
                on(&steal_pct, args.reader_cpu)
            ),
        ),
        (
            "bytes read by reader / written",
            format!(
                "{:.1} / {:.1} MB",
                w.bytes_read as f64 / 1e6,
                w.c.bytes as f64 / 1e6
            ),
        ),
    ];
    for (k, v) in &rows {
        println!("  {k:<40} {v:>16}");
    }

    if writer_pct < 90.0 && args.rate == 0 {
        println!(
            "warning: the writer thread ran only {writer_pct:.0} % of the wall time while its \
             core was {} busy with all tasks and {} stolen by the hypervisor: something else \
             took the core, so writes/s is below this machine's limit. CPU ns per write is still \
             the writer's own cost (thread CPU time excludes steal), though a shared cache may \
             raise it; rerun on a quiet machine.",
            on(&busy_pct, args.writer_cpu),
            on(&steal_pct, args.writer_cpu)
        );
    }
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "connections": n,
            "frame_bytes": args.frame_bytes,
            "seconds": secs,
            "writes": w.c.writes,
            "writes_per_s": writes_per_s,
            "cpu_ns_per_write": cpu_ns_per_write,
            "writes_per_cpu_s": writes_per_cpu_s,
            "would_block": w.c.would_block,
            "writer_cpu_percent": writer_pct,
            "reader_cpu_percent": reader_pct,
            "machine": { "cores": cores, "model": model },
            "bytes_per_s": w.c.bytes as f64 / secs,
            "partial_writes": w.c.partial,
            "write_errors": w.c.errors,
            "process_cpu_percent": process_pct,
            "reader_bytes": w.bytes_read,
            "write_call": write_call,
            "writer_core": args.writer_cpu,
            "reader_core": args.reader_cpu,
            "source_ips": args.source_ips,
            "reader": reader_mode,
            "reader_mode": args.reader.name(),
            "reader_threads": args.readers,
            "reader_sleeps": w.reader_sleeps,
            "reader_sleeps_per_write": sleeps_per_write,
            "reader_epoll_waits": w.reader_waits,
            "reader_events_per_wait": events_per_wait,
            "rate": args.rate,
            "tick_hz": args.tick_hz,
            "paced": args.rate > 0,
            "core_busy_percent": busy_pct,
            "core_steal_percent": steal_pct,
        });
        let mut f = std::fs::File::create(path)?;
        serde_json::to_writer_pretty(&mut f, &json)?;
        f.write_all(b"\n")?;
        println!("JSON written to {path}");
    }
    Ok(ExitCode::SUCCESS)
}

//! Physical-limit probe: how many small socket writes one core can make over loopback.
//!
//! Opens N loopback TCP connections. The accepted side of each (the side that stands for the
//! server) is written by ONE thread, round-robin, one `libc::write(2)` of a B-byte frame per
//! socket per round; the connecting side (the clients) is drained by another thread with epoll
//! (edge triggered, nonblocking reads into a 64 KiB buffer). After a 1 s warm-up it measures S
//! seconds and reports writes/s, bytes/s and the writer thread's CPU per write
//! (`CLOCK_THREAD_CPUTIME_ID`), the figure the end-to-end scenarios are divided by.
//!
//! Writer sockets are nonblocking: a write that would block is skipped and counted
//! (`would_block`), so a reader that falls behind shows up instead of stalling the writer.
//!
//! On loopback the kernel usually runs the receive path of a segment (the TCP receive, the
//! reader's wake-up) in the softirq raised by the sender's own syscall, so the writer's CPU
//! per write includes most of the kernel's receive-side work too, as a real server's does not.
//!
//! ```sh
//! cargo bench --bench write_probe -- --connections 1000 --frame-bytes 1800 --seconds 5
//! target/release/deps/write_probe-* --connections 10000 --frame-bytes 100 --json probe.json
//! ```

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::thread::JoinHandleExt;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// Also write the result as a JSON object to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<String>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
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
// Reader: drains every client socket with epoll as fast as it can.

/// epoll data of the stop pipe (reader-process mode).
const STOP_TOKEN: u64 = u64::MAX;

/// Drains `fds` until `stop` is set or `stop_fd` (a pipe's read end) hangs up.
fn reader_loop(
    fds: &[RawFd],
    stop: &AtomicBool,
    stop_fd: Option<RawFd>,
    bytes_read: &AtomicU64,
) -> std::io::Result<()> {
    // SAFETY: plain syscall.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let result = drain(ep, fds, stop, stop_fd, bytes_read);
    // SAFETY: ep is ours and closed once.
    unsafe { libc::close(ep) };
    result
}

fn drain(
    ep: RawFd,
    fds: &[RawFd],
    stop: &AtomicBool,
    stop_fd: Option<RawFd>,
    bytes_read: &AtomicU64,
) -> std::io::Result<()> {
    let regs = fds
        .iter()
        .enumerate()
        .map(|(i, &fd)| (fd, (libc::EPOLLIN | libc::EPOLLET) as u32, i as u64))
        .chain(stop_fd.map(|fd| (fd, libc::EPOLLIN as u32, STOP_TOKEN)));
    for (fd, events, token) in regs {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: ep and fd are open descriptors; ev is valid.
        if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let mut buf = vec![0u8; READ_BUF];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut total = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: events has room for events.len() entries.
        let n =
            unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as libc::c_int, 50) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in &events[..n as usize] {
            if ev.u64 == STOP_TOKEN {
                bytes_read.store(total, Ordering::Relaxed);
                return Ok(());
            }
            let fd = fds[ev.u64 as usize];
            // Edge triggered: read until the socket is empty.
            loop {
                // SAFETY: buf is valid for buf.len() bytes; fd is open (owned by the caller).
                let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                if r > 0 {
                    total += r as u64;
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
        bytes_read.store(total, Ordering::Relaxed);
    }
    bytes_read.store(total, Ordering::Relaxed);
    Ok(())
}

/// A counter shared with a forked child (MAP_SHARED anonymous page), leaked for the run.
fn shared_counter() -> std::io::Result<&'static AtomicU64> {
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
    // SAFETY: the page is zeroed, aligned, never unmapped, and only used as an AtomicU64.
    Ok(unsafe { &*(p as *const AtomicU64) })
}

/// The reader in a forked child process (`--reader-process`): each process then holds only N
/// sockets, which gets past a per-process open-files limit of 2×N. Must be called while the
/// process has one thread. Returns the child's pid and the write end of its stop pipe; the
/// child connects the N clients, drains them, and exits when the pipe closes.
fn fork_reader(
    n: usize,
    source_ips: usize,
    cpu: Option<usize>,
    target: &SockAddr,
    bytes_read: &AtomicU64,
) -> std::io::Result<(libc::pid_t, RawFd)> {
    let mut pipe = [0 as RawFd; 2];
    // SAFETY: pipe is a valid array of two fds.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: called before any other thread is started, so the child is a full copy.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid > 0 {
        // SAFETY: the read end belongs to the child.
        unsafe { libc::close(pipe[0]) };
        return Ok((pid, pipe[1]));
    }
    // Child.
    // SAFETY: the write end belongs to the parent; closing ours lets the pipe hang up.
    unsafe { libc::close(pipe[1]) };
    let result = (|| -> std::io::Result<()> {
        if let Some(c) = cpu {
            pin_current_thread(c)?;
        }
        let streams = (0..n)
            .map(|i| connect_one(i, target, source_ips))
            .collect::<std::io::Result<Vec<_>>>()?;
        let fds: Vec<RawFd> = streams.iter().map(|s| s.as_raw_fd()).collect();
        reader_loop(&fds, &AtomicBool::new(false), Some(pipe[0]), bytes_read)
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
    Thread(std::thread::JoinHandle<std::io::Result<()>>),
    Process { pid: libc::pid_t, stop_pipe: RawFd },
}

struct Snapshot {
    at: Instant,
    counters: Counters,
    writer_cpu_ns: u64,
    reader_cpu_ns: u64,
    process_cpu_ns: u64,
    bytes_read: u64,
    cores: Vec<host::CoreTicks>,
}

struct Window {
    wall: Duration,
    c: Counters,
    writer_cpu_ns: u64,
    reader_cpu_ns: u64,
    process_cpu_ns: u64,
    bytes_read: u64,
    /// (busy, steal) ticks per core during the window.
    cores: Vec<(u64, u64)>,
}

fn writer_loop(
    fds: Vec<RawFd>,
    frame_bytes: usize,
    measure: Duration,
    cpu: Option<usize>,
    reader_clock: libc::clockid_t,
    bytes_read: &'static AtomicU64,
) -> std::io::Result<Window> {
    if let Some(c) = cpu {
        pin_current_thread(c)?;
    }
    let frame = vec![0xA5u8; frame_bytes];
    let snap = |c: Counters| Snapshot {
        at: Instant::now(),
        counters: c,
        writer_cpu_ns: cpu_ns(libc::CLOCK_THREAD_CPUTIME_ID),
        reader_cpu_ns: cpu_ns(reader_clock),
        process_cpu_ns: cpu_ns(libc::CLOCK_PROCESS_CPUTIME_ID),
        bytes_read: bytes_read.load(Ordering::Relaxed),
        cores: host::core_ticks(),
    };
    let mut c = Counters::default();
    let start = Instant::now();
    let mut deadline = start + WARM_UP;
    let mut begin: Option<Snapshot> = None;
    let mut i = 0usize;
    loop {
        // SAFETY: frame is valid for frame.len() bytes; the fd is open (owned by main).
        let r = unsafe { libc::write(fds[i], frame.as_ptr().cast(), frame.len()) };
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
        // Read the clock every 64 calls (and at every round's end): ~0.3 % of a write's cost.
        if (i == 0 || (c.writes + c.would_block) % 64 == 0) && Instant::now() >= deadline {
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

    let bytes_read = shared_counter()?;
    let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
    let setup = Instant::now();
    // The reader: a thread of this process, or a forked child (started before any thread).
    let (writers, reader, reader_clock) = if args.reader_process {
        let (listener, target) = listen()?;
        let (pid, stop_pipe) =
            fork_reader(n, args.source_ips, args.reader_cpu, &target, bytes_read)?;
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
        (writers, Reader::Process { pid, stop_pipe }, clock)
    } else {
        let (writers, readers) = connect_pairs(n, args.source_ips)?;
        let cpu = args.reader_cpu;
        let handle = std::thread::Builder::new()
            .name("probe-reader".into())
            .spawn(move || -> std::io::Result<()> {
                if let Some(c) = cpu {
                    pin_current_thread(c)?;
                }
                let fds: Vec<RawFd> = readers.iter().map(|s| s.as_raw_fd()).collect();
                reader_loop(&fds, stop, None, bytes_read)
            })?;
        let mut clock: libc::clockid_t = 0;
        // SAFETY: the thread is alive until it is joined below; clock is writable.
        let rc = unsafe { libc::pthread_getcpuclockid(handle.as_pthread_t(), &mut clock) };
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        (writers, Reader::Thread(handle), clock)
    };
    let setup = setup.elapsed();
    let fds: Vec<RawFd> = writers.iter().map(|s| s.as_raw_fd()).collect();

    let measure = Duration::from_secs_f64(args.seconds);
    let writer = {
        let (cpu, fb) = (args.writer_cpu, args.frame_bytes);
        std::thread::Builder::new()
            .name("probe-writer".into())
            .spawn(move || writer_loop(fds, fb, measure, cpu, reader_clock, bytes_read))?
    };
    let window = writer.join().expect("writer thread panicked");
    stop.store(true, Ordering::Relaxed);
    let reader_result = match reader {
        Reader::Thread(h) => h.join().expect("reader thread panicked"),
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

    println!(
        "write_probe: {n} loopback connections, {} B frames, libc::write(2) from one thread, \
         {secs:.2} s measured after {} s warm-up (setup {:.2} s)",
        args.frame_bytes,
        WARM_UP.as_secs(),
        setup.as_secs_f64()
    );
    println!(
        "machine: {cores} core(s), {model}; writer on core {}, reader {reader_mode} on core {}; \
         {} source IP(s)",
        pin(args.writer_cpu),
        pin(args.reader_cpu),
        args.source_ips
    );
    let rows: [(&str, String); 13] = [
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
                "reader thread CPU"
            },
            format!("{reader_pct:.1} %"),
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

    if writer_pct < 90.0 {
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
            "write_call": "libc::write",
            "writer_core": args.writer_cpu,
            "reader_core": args.reader_cpu,
            "source_ips": args.source_ips,
            "reader": reader_mode,
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

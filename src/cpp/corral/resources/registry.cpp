#include "corral/resources/registry.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <random>
#include <set>
#include <sstream>

#include "corral/core/types.hpp"
#include "corral/os/runtime_dir.hpp"
#include "corral/resources/ports.hpp"
#include "corral/resources/runtime.hpp"

namespace corral {
namespace {

// File names: "<type>@<value>", with '/', '%', '@' and control bytes percent-encoded so a
// path value is one name. A name too long for NAME_MAX keeps a prefix and a hash.
std::string encode(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '/' || c == '%' || c == '@' || c < 0x20 || c == 0x7f)
      out += fmt::format("%{:02X}", c);
    else
      out += static_cast<char>(c);
  }
  return out;
}

std::string claim_name(const std::string& type, const std::string& value) {
  std::string name = encode(type) + "@" + encode(value);
  if (name.size() <= 200) return name;
  std::uint64_t h = 1469598103934665603ULL;  // FNV-1a: stable across processes
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ULL;
  return fmt::format("{}#{:016x}", name.substr(0, 180), h);
}

const std::string& boot_id() {
  static const std::string id = [] {
    std::ifstream f("/proc/sys/kernel/random/boot_id");
    std::string s;
    std::getline(f, s);
    return s;
  }();
  return id;
}

std::uint64_t start_time_of(pid_t pid) {
  std::ifstream f(fmt::format("/proc/{}/stat", pid));
  std::string line;
  std::getline(f, line);
  auto close = line.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(line.substr(close + 2));
  std::string field;
  // Fields after the command: state is field 3; starttime is field 22.
  for (int i = 3; i <= 22 && rest >> field; ++i)
    if (i == 22) return std::strtoull(field.c_str(), nullptr, 10);
  return 0;
}

// This process's start time, read once per pid (a forked child reads its own). Atomics,
// not a mutex, which a fork could copy locked; two threads racing both read /proc.
std::uint64_t my_start_time() {
  static std::atomic<pid_t> cached_pid{0};
  static std::atomic<std::uint64_t> cached{0};
  pid_t me = ::getpid();
  if (cached_pid.load(std::memory_order_acquire) == me) return cached.load(std::memory_order_relaxed);
  std::uint64_t t = start_time_of(me);
  cached.store(t, std::memory_order_relaxed);
  cached_pid.store(me, std::memory_order_release);
  return t;
}

// Overwrites in place, and truncates only a longer old record: a kept file then costs no
// block freed and allocated again per claim (journaled on ext4).
void write_record(int fd, off_t old_size, const std::string& type, const std::string& value, const ClaimOwner& owner) {
  pid_t me = ::getpid();  // not cached: a forked child claims under its own pid
  std::string text = fmt::format("type={}\nvalue={}\npid={}\nstart={}\nboot={}\nstack={}\nservice={}\n", type,
                                 value, me, my_start_time(), boot_id(), owner.stack, owner.service);
  (void)!::pwrite(fd, text.data(), text.size(), 0);
  if (old_size > static_cast<off_t>(text.size())) (void)!::ftruncate(fd, static_cast<off_t>(text.size()));
}

ClaimRecord read_record(int fd) {
  ClaimRecord r;
  char buf[8192];
  ssize_t n = ::pread(fd, buf, sizeof buf, 0);
  if (n <= 0) return r;
  std::istringstream in(std::string(buf, static_cast<std::size_t>(n)));
  std::string line;
  while (std::getline(in, line)) {
    auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    std::string k = line.substr(0, eq), v = line.substr(eq + 1);
    if (k == "type") r.type = v;
    else if (k == "value") r.value = v;
    else if (k == "pid") r.pid = static_cast<pid_t>(std::atol(v.c_str()));
    else if (k == "start") r.start_time = std::strtoull(v.c_str(), nullptr, 10);
    else if (k == "boot") r.boot_id = v;
    else if (k == "stack") r.stack = v;
    else if (k == "service") r.service = v;
  }
  return r;
}

// (dev, inode) of every file with an flock held for writing, from /proc/locks.
std::set<std::pair<dev_t, ino_t>> held_flocks() {
  std::set<std::pair<dev_t, ino_t>> out;
  std::ifstream f("/proc/locks");
  std::string line;
  while (std::getline(f, line)) {
    if (line.find("FLOCK") == std::string::npos || line.find("WRITE") == std::string::npos) continue;
    if (line.find("->") != std::string::npos) continue;  // a waiter, not a holder
    std::istringstream in(line);
    std::string idx, kind, adv, mode, pid, dev;
    in >> idx >> kind >> adv >> mode >> pid >> dev;
    unsigned maj = 0, min = 0;
    unsigned long long ino = 0;
    if (std::sscanf(dev.c_str(), "%x:%x:%llu", &maj, &min, &ino) == 3)
      out.insert({makedev(maj, min), static_cast<ino_t>(ino)});
  }
  return out;
}

std::string fill_value(const std::string& command, const std::string& value) {
  std::string out;
  const std::string key = "{{value}}";
  std::size_t at = 0;
  for (auto p = command.find(key); p != std::string::npos; p = command.find(key, at)) {
    out += command.substr(at, p - at) + value;
    at = p + key.size();
  }
  return out + command.substr(at);
}

}  // namespace

std::optional<ResourceType> builtin_resource_type(const std::string& name) {
  ResourceType t;
  t.name = name;
  auto range = [&](long lo, long hi) {
    t.kind = ResourceType::Kind::range;
    t.lo = lo;
    t.hi = hi;
    t.probe = ResourceType::Probe::tcp_port;
    return t;
  };
  if (name == "port") {
    t.kind = ResourceType::Kind::kernel_port;
    t.probe = ResourceType::Probe::tcp_port;
    return t;
  }
  if (name == "tcpport") return range(3000, 9999);
  if (name == "vncport") return range(5900, 5999);
  if (name == "serialport") return range(9600, 9699);
  if (name == "path") {
    t.probe = ResourceType::Probe::path;
    return t;
  }
  return std::nullopt;
}

std::string describe_holder(const ClaimRecord& r) {
  std::string out;
  if (!r.stack.empty()) out += fmt::format("stack '{}', ", r.stack);
  if (!r.service.empty()) out += fmt::format("service '{}', ", r.service);
  if (r.pid > 0) return out + fmt::format("pid {}", r.pid);
  return out.empty() ? "another process" : out.substr(0, out.size() - 2);
}

void Claim::release() noexcept {
  if (!fd_) return;
  // Unlinked while still locked: whoever opened this inode meanwhile sees, once it has the
  // lock, that the path no longer names it, and starts over. A kept file is only unlocked
  // (its stale content is never shown: listing asks /proc/locks who holds a lock).
  if (!keep_file_) ::unlink(path_.c_str());
  fd_.reset();
}

std::string claims_dir() {
  static const std::string dir = runtime_subdir("claims");
  return dir;
}

std::optional<Claim> try_claim(const std::string& type, const std::string& value, const ClaimOwner& owner,
                               bool keep_file) {
  std::string path = claims_dir() + "/" + claim_name(type, value);
  for (;;) {
    Fd fd(os::open_private(path, O_RDWR | O_CREAT));
    if (!fd) throw Error(fmt::format("cannot claim {} {}: {}: {}", type, value, path, std::strerror(errno)));
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
      if (errno == EWOULDBLOCK) return std::nullopt;
      throw Error(fmt::format("cannot claim {} {}: flock: {}", type, value, std::strerror(errno)));
    }
    struct stat held{}, named{};
    if (::fstat(fd.get(), &held) != 0) continue;
    if (::stat(path.c_str(), &named) != 0 || held.st_ino != named.st_ino || held.st_dev != named.st_dev)
      continue;  // released (unlinked) between our open and our lock: try the new file
    write_record(fd.get(), held.st_size, type, value, owner);
    return Claim(type, value, std::move(path), std::move(fd), keep_file);
  }
}

std::optional<ClaimRecord> claim_holder(const std::string& type, const std::string& value) {
  std::string path = claims_dir() + "/" + claim_name(type, value);
  Fd fd(os::open_private(path, O_RDONLY));
  if (!fd) return std::nullopt;
  struct stat st{};
  if (::fstat(fd.get(), &st) != 0) return std::nullopt;
  if (!held_flocks().contains({st.st_dev, st.st_ino})) return std::nullopt;
  ClaimRecord r = read_record(fd.get());
  if (r.type.empty()) r.type = type;
  if (r.value.empty()) r.value = value;
  r.live = true;
  return r;
}

std::vector<ClaimRecord> list_claims() {
  std::vector<ClaimRecord> out;
  std::string dir = claims_dir();
  auto held = held_flocks();
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    Fd fd(os::open_private(dir + "/" + e->d_name, O_RDONLY));
    if (!fd) continue;
    struct stat st{};
    if (::fstat(fd.get(), &st) != 0 || !held.contains({st.st_dev, st.st_ino})) continue;
    ClaimRecord r = read_record(fd.get());
    if (r.type.empty()) continue;  // locked a moment ago, content not written yet
    r.live = true;
    out.push_back(std::move(r));
  }
  ::closedir(d);
  std::sort(out.begin(), out.end(), [](const ClaimRecord& a, const ClaimRecord& b) {
    return std::tie(a.type, a.value, a.pid) < std::tie(b.type, b.value, b.pid);
  });
  return out;
}

bool run_check(const std::string& command, const std::string& value, double timeout) {
  SpawnRequest req;
  req.argv = {"/bin/sh", "-c", fill_value(command, value)};
  req.env = {"PATH=/usr/local/bin:/usr/bin:/bin", "CORRAL_VALUE=" + value};
  SpawnResult r = spawn(req);
  if (!r) return false;
  pollfd p{r.pidfd.get(), POLLIN, 0};
  int ms = static_cast<int>(std::clamp(timeout, 0.0, 3600.0) * 1000);
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  int rc = 0;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
    rc = ::poll(&p, 1, static_cast<int>(std::max<long>(0, left.count())));
    if (rc >= 0 || errno != EINTR) break;
  }
  // The check's whole group goes, whether it finished (leftovers) or ran out of time;
  // the leader is unreaped, so its group id is still ours.
  ::kill(-r.pid, SIGKILL);
  siginfo_t info{};
  ::waitid(P_PID, static_cast<id_t>(r.pid), &info, WEXITED);
  return rc > 0 && info.si_code == CLD_EXITED && info.si_status == 0;
}

bool probe_free(const ResourceType& t, const std::string& value) {
  if (t.probe == ResourceType::Probe::path) {
    struct stat st{};
    return ::lstat(value.c_str(), &st) != 0 && errno == ENOENT;
  }
  if (t.probe == ResourceType::Probe::tcp_port) {
    char* end = nullptr;
    long port = std::strtol(value.c_str(), &end, 10);
    if (*end != '\0' || port < 1 || port > 65535) return false;
    Fd sock(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!sock) return false;
    // SO_REUSEADDR: a listener (ours or foreign) still refuses the bind, while a
    // connection of an earlier run in TIME_WAIT does not make a free port look taken.
    int one = 1;
    ::setsockopt(sock.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    return ::bind(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  }
  return true;
}

AllocationResult allocate(const ResourceType& t, const ClaimRequest& req, const ClaimOwner& owner) {
  AllocationResult out;
  auto usable = [&](const std::string& v) {
    return probe_free(t, v) && (t.check.empty() || run_check(t.check, v, t.timeout));
  };
  if (!req.given.empty()) {
    for (const auto& v : req.given) {
      auto c = try_claim(t.name, v, owner, t.kind != ResourceType::Kind::free);
      if (!c) {
        auto h = claim_holder(t.name, v);
        out.error = fmt::format("{} {} is taken by {}", t.name, v, h ? describe_holder(*h) : "another process");
        out.claims.clear();
        out.exhausted = true;  // its holder may release it: a `wait` claim waits for that
        return out;
      }
      if (!usable(v)) {
        out.error = t.probe == ResourceType::Probe::path   ? fmt::format("path {} already exists", v)
                    : t.probe == ResourceType::Probe::tcp_port ? fmt::format("port {} is in use by a program outside corral", v)
                                                             : fmt::format("{} {} failed its check", t.name, v);
        out.claims.clear();
        return out;
      }
      out.claims.push_back(std::move(*c));
    }
    return out;
  }
  if (t.kind == ResourceType::Kind::kernel_port) {
    // The kernel picks free ports (bind to 0); the registry makes them exclusive.
    try {
      for (int i = 0; i < req.count; ++i) {
        auto lease = allocate_port(owner);
        out.claims.push_back(lease.take_claim());
      }
    } catch (const Error& e) {
      out.claims.clear();
      out.error = e.what();
    }
    return out;
  }
  // Values by index, never materialised: a claim costs the same in a range of a million.
  std::size_t size = 0;
  if (t.kind == ResourceType::Kind::range) {
    size = t.hi >= t.lo ? static_cast<std::size_t>(t.hi - t.lo + 1) : 0;
  } else if (t.kind == ResourceType::Kind::list) {
    size = t.values.size();
  } else {
    out.error = fmt::format("resource '{}' has no pool of values: give the value", t.name);
    return out;
  }
  auto value_at = [&](std::size_t i) {
    return t.kind == ResourceType::Kind::range ? std::to_string(t.lo + static_cast<long>(i)) : t.values[i];
  };
  // A random start: two allocators scanning at once rarely try the same value first.
  static std::atomic<std::uint64_t> salt{std::random_device{}()};
  std::size_t start = size == 0 ? 0 : static_cast<std::size_t>(salt.fetch_add(0x9E3779B97F4A7C15ULL) % size);
  for (std::size_t i = 0; i < size && static_cast<int>(out.claims.size()) < req.count; ++i) {
    const std::string v = value_at((start + i) % size);
    auto c = try_claim(t.name, v, owner, true);
    if (!c) continue;
    if (!usable(v)) continue;  // released by the destructor
    out.claims.push_back(std::move(*c));
  }
  if (static_cast<int>(out.claims.size()) < req.count) {
    out.claims.clear();
    out.exhausted = true;
    std::string holders;
    int shown = 0;
    for (const auto& r : list_claims()) {
      if (r.type != t.name) continue;
      if (++shown > 8) {
        holders += ", ...";
        break;
      }
      holders += fmt::format("{}{} ({})", holders.empty() ? "" : ", ", r.value, describe_holder(r));
    }
    out.error = fmt::format("no free {} for {} value{}: {}", t.name, req.count, req.count == 1 ? "" : "s",
                            holders.empty() ? "every free value was refused by the OS or the check" : "held: " + holders);
  }
  return out;
}

}  // namespace corral

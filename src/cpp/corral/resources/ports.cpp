#include "corral/resources/ports.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include <pthread.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <mutex>
#include <cstring>
#include <vector>

#include "corral/core/types.hpp"
#include "corral/os/runtime_dir.hpp"
#include "corral/resources/runtime.hpp"

namespace corral {
namespace {

// fd + 1 of the reserving socket of each port (0: none). Plain atomics, so the handler in a
// forked child (which may only make async-signal-safe calls) can read them.
std::atomic<int> reserved_fds[65536];

void close_reserved_in_child() {
  for (auto& r : reserved_fds) {
    int v = r.load(std::memory_order_relaxed);
    if (v > 0) {
      ::close(v - 1);
      r.store(0, std::memory_order_relaxed);
    }
  }
}

}  // namespace

ReservedSocket::ReservedSocket(int port, Fd fd) noexcept : port_(port), fd_(std::move(fd)) {
  static std::once_flag once;
  std::call_once(once, [] { ::pthread_atfork(nullptr, nullptr, close_reserved_in_child); });
  if (fd_ && port_ > 0 && port_ < 65536) reserved_fds[port_].store(fd_.get() + 1, std::memory_order_relaxed);
}

ReservedSocket& ReservedSocket::operator=(ReservedSocket&& o) noexcept {
  if (this != &o) {
    reset();
    port_ = o.port_;
    fd_ = std::move(o.fd_);
    o.port_ = 0;
  }
  return *this;
}

void ReservedSocket::reset() noexcept {
  if (fd_ && port_ > 0 && port_ < 65536) reserved_fds[port_].store(0, std::memory_order_relaxed);
  fd_.reset();
}

std::string port_lock_dir() { return claims_dir(); }

bool PortLease::reclaim_socket() noexcept {
  if (socket_ || port_ <= 0) return static_cast<bool>(socket_);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = htons(static_cast<std::uint16_t>(port_));
  // First without SO_REUSEADDR: a socket bound that way keeps out even programs that set
  // it themselves. The service's last connections in TIME_WAIT refuse that bind, and then
  // SO_REUSEADDR still keeps out every program that does not set it.
  for (int reuse : {0, 1}) {
    Fd sock(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!sock) return false;
    if (reuse) ::setsockopt(sock.get(), SOL_SOCKET, SO_REUSEADDR, &reuse, sizeof reuse);
    if (::bind(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      socket_ = ReservedSocket(port_, std::move(sock));
      return true;
    }
  }
  return false;
}

PortLease allocate_port(const ClaimOwner& owner) {
  // Ports we saw claimed by someone else stay bound here until we are done, so that the
  // kernel does not hand the same one back to us on the next try.
  std::vector<Fd> rejected;
  for (int attempt = 0; attempt < 256; ++attempt) {
    Fd sock(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!sock) throw Error(fmt::format("cannot allocate a port: socket: {}", std::strerror(errno)));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_ANY);  // free on every address, as a service may bind any
    addr.sin_port = 0;
    if (::bind(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
      throw Error(fmt::format("cannot allocate a port: bind: {}", std::strerror(errno)));
    socklen_t len = sizeof addr;
    ::getsockname(sock.get(), reinterpret_cast<sockaddr*>(&addr), &len);
    int port = ntohs(addr.sin_port);
    // The same registry as every other resource: a port pinned or drawn from a range by
    // another corral (tcpport, vncport) is never handed out here too.
    if (auto claim = try_claim("port", std::to_string(port), owner, true))
      return PortLease(port, std::move(sock), std::move(*claim));
    rejected.push_back(std::move(sock));
  }
  throw Error("cannot allocate a port: every port offered is claimed by another corral");
}

PortLease claim_port(int port, const ClaimOwner& owner) {
  auto claim = try_claim("port", std::to_string(port), owner, true);
  if (!claim) {
    auto h = claim_holder("port", std::to_string(port));
    throw Error(fmt::format("port {} is taken by {}", port, h ? describe_holder(*h) : "another process"));
  }
  PortLease lease(port, Fd(), std::move(*claim));
  if (!lease.reclaim_socket()) throw Error(fmt::format("port {} is in use by a program outside corral", port));
  return lease;
}

}  // namespace corral

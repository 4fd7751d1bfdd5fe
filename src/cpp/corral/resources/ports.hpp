// Free TCP ports that are never handed out twice: not within a stack, not across stacks,
// not across processes (two pytest-xdist workers allocating at the same moment).
//
// The kernel picks the port (bind to port 0), and we keep that socket bound until the
// service is about to start, so the kernel cannot give the port to anyone else meanwhile.
// Across processes, each allocated port is claimed by an flock on a file named after it in
// a per-user directory; the lock lives as long as the lease, and dies with its process, so
// a crashed owner never leaks a claim.
#pragma once

#include <string>

#include "corral/spawn/spawn.hpp"

namespace corral {

// The socket that keeps a port bound until the service binds it. Registered in a table by
// port number, so that a process forked from the owner without exec (multiprocessing,
// os.fork) closes its copies at once (pthread_atfork): an inherited copy would keep the
// port bound and make the service's own bind fail with EADDRINUSE.
class ReservedSocket {
 public:
  ReservedSocket() = default;
  ReservedSocket(int port, Fd fd) noexcept;
  ReservedSocket(ReservedSocket&& o) noexcept : port_(o.port_), fd_(std::move(o.fd_)) { o.port_ = 0; }
  ReservedSocket& operator=(ReservedSocket&& o) noexcept;
  ~ReservedSocket() { reset(); }
  void reset() noexcept;
  explicit operator bool() const noexcept { return static_cast<bool>(fd_); }

 private:
  int port_ = 0;
  Fd fd_;
};

class PortLease {
 public:
  PortLease() = default;
  PortLease(int port, Fd socket, Fd lock) : port_(port), socket_(port, std::move(socket)), lock_(std::move(lock)) {}
  int port() const noexcept { return port_; }
  // Closes the reserving socket so the service can bind; the cross-process claim stays.
  void release_socket() noexcept { socket_.reset(); }
  bool holds_socket() const noexcept { return static_cast<bool>(socket_); }
  // Binds the port again after the service's process is gone, so that nothing else can
  // take it while the service waits to restart. False when something holds it now (a
  // listener that outlived the service).
  bool reclaim_socket() noexcept;

 private:
  int port_ = 0;
  ReservedSocket socket_;
  Fd lock_;
};

// Directory of the claim files: <runtime dir>/ports (see os/runtime_dir.hpp), created
// private. Throws corral::Error naming the path when the runtime directory is unsafe.
std::string port_lock_dir();

// Throws corral::Error when no port can be had.
PortLease allocate_port();

}  // namespace corral

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

#include "corral/resources/registry.hpp"
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
  PortLease(int port, Fd socket, Claim claim) : port_(port), socket_(port, std::move(socket)), claim_(std::move(claim)) {}
  int port() const noexcept { return port_; }
  // Closes the reserving socket so the service can bind; the cross-process claim stays.
  void release_socket() noexcept { socket_.reset(); }
  bool holds_socket() const noexcept { return static_cast<bool>(socket_); }
  // Binds the port again after the service's process is gone, so that nothing else can
  // take it while the service waits to restart. False when something holds it now (a
  // listener that outlived the service).
  bool reclaim_socket() noexcept;
  // The registry claim alone (the socket is closed): for a "port" resource claim.
  Claim take_claim() noexcept {
    socket_.reset();
    return std::move(claim_);
  }

 private:
  int port_ = 0;
  ReservedSocket socket_;
  Claim claim_;  // ("port", N) in the machine-wide registry
};

// Directory of the claim files: <runtime dir>/claims (see registry.hpp), created private.
// Throws corral::Error naming the path when the runtime directory is unsafe.
std::string port_lock_dir();

// A kernel-chosen free port, claimed as ("port", N) in the registry. Throws corral::Error
// when no port can be had.
PortLease allocate_port(const ClaimOwner& owner = {});

// Port `port` exactly (a pinned port): claimed in the registry and bound. Throws
// corral::Error naming the holder when another corral claims it, or saying that a program
// outside corral holds it.
PortLease claim_port(int port, const ClaimOwner& owner = {});

}  // namespace corral

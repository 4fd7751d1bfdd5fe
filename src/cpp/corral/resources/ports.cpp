#include "corral/resources/ports.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "corral/core/types.hpp"
#include "corral/os/runtime_dir.hpp"
#include "corral/resources/runtime.hpp"

namespace corral {

std::string port_lock_dir() { return runtime_subdir("ports"); }

PortLease allocate_port() {
  static const std::string dir = port_lock_dir();
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
    std::string path = fmt::format("{}/{}", dir, port);
    // Shared by every corral of this user, so not O_EXCL; never through a planted symlink.
    Fd lock(os::open_private(path, O_RDWR | O_CREAT));
    if (!lock) throw Error(fmt::format("cannot allocate a port: {}: {}", path, std::strerror(errno)));
    if (::flock(lock.get(), LOCK_EX | LOCK_NB) == 0) return PortLease(port, std::move(sock), std::move(lock));
    rejected.push_back(std::move(sock));
  }
  throw Error("cannot allocate a port: every port offered is claimed by another corral");
}

}  // namespace corral

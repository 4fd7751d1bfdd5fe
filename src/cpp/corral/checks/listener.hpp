// Who is listening on a port? A TCP check that connects only proves that *someone* listens:
// an orphan of an earlier run holding the port would make a service "ready" that is not.
// This finds the listening socket in /proc/net/tcp{,6} and looks for it among the fds of the
// service's process group.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

namespace corral {

// nullopt when a process of group `pgid` owns a listening socket on `port` (or when that
// cannot be told, e.g. no LISTEN entry is visible); otherwise a description of the
// foreign listener ("port 8080 is held by pid 123 (python3), not by the service").
std::optional<std::string> foreign_listener(int port, pid_t pgid);

}  // namespace corral

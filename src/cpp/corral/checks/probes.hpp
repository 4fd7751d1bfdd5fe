// One attempt of a readiness or liveness check, run on the engine's io_context. Each probe
// owns its sockets, timers and child process, and reports exactly once. The caller decides
// what an attempt means (retry after `interval`, count failures, give up at a deadline).
#pragma once

#include <boost/asio/io_context.hpp>

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

namespace corral {

// ok, and a short description of what happened ("connection refused", "status 503"...).
using ProbeDone = std::function<void(bool ok, std::string detail)>;

// A TCP connect to 127.0.0.1:port.
void probe_tcp(boost::asio::io_context& io, int port, double timeout, ProbeDone done);

// GET `path` on 127.0.0.1:port; `status` 0 accepts any 2xx or 3xx.
void probe_http(boost::asio::io_context& io, int port, const std::string& path, int status,
                double timeout, ProbeDone done);

// Told of a child's process group right after it is spawned, and again right after it is
// reaped: the death watcher's watch/unwatch (engine/watcher.hpp), so that a check running
// when the owner dies is killed with the services. Either may be empty.
struct GroupTracker {
  std::function<void(pid_t pgid)> watch;
  std::function<void(pid_t pgid)> unwatch;
};

// Runs argv (own process group, output discarded); ok when it exits 0 in time. A command
// still running at the timeout is killed with its group.
void probe_exec(boost::asio::io_context& io, const std::vector<std::string>& argv,
                const std::vector<std::string>& env, const std::string& cwd, double timeout,
                ProbeDone done, GroupTracker tracker = {});

}  // namespace corral

#include "corral/checks/probes.hpp"

#include <signal.h>
#include <sys/wait.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <fmt/format.h>

#include <array>
#include <chrono>
#include <memory>

#include "corral/spawn/spawn.hpp"

namespace corral {
namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

std::chrono::steady_clock::duration seconds(double s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(s));
}

// State shared by the handlers of one network probe. `finish` reports once and cancels
// whatever is still pending.
struct NetProbe : std::enable_shared_from_this<NetProbe> {
  NetProbe(asio::io_context& io, ProbeDone d) : socket(io), timer(io), done(std::move(d)) {}
  tcp::socket socket;
  asio::steady_timer timer;
  ProbeDone done;
  bool finished = false;
  std::string request;
  std::array<char, 512> buffer{};
  std::size_t received = 0;

  void finish(bool ok, std::string detail) {
    if (finished) return;
    finished = true;
    boost::system::error_code ignored;
    timer.cancel();
    socket.close(ignored);
    auto cb = std::move(done);
    cb(ok, std::move(detail));
  }
  void arm(double timeout) {
    timer.expires_after(seconds(timeout));
    timer.async_wait([self = shared_from_this(), timeout](const boost::system::error_code& ec) {
      if (!ec) self->finish(false, fmt::format("no answer within {}s", timeout));
    });
  }
};

tcp::endpoint loopback(int port) {
  return {asio::ip::address_v4::loopback(), static_cast<unsigned short>(port)};
}

}  // namespace

void probe_tcp(asio::io_context& io, int port, double timeout, ProbeDone done) {
  auto p = std::make_shared<NetProbe>(io, std::move(done));
  p->arm(timeout);
  p->socket.async_connect(loopback(port), [p, port](const boost::system::error_code& ec) {
    if (ec) return p->finish(false, fmt::format("port {}: {}", port, ec.message()));
    p->finish(true, fmt::format("port {} accepts connections", port));
  });
}

namespace {
void http_read(const std::shared_ptr<NetProbe>& p, int port, int want) {
  p->socket.async_read_some(
      asio::buffer(p->buffer.data() + p->received, p->buffer.size() - p->received),
      [p, port, want](const boost::system::error_code& ec, std::size_t n) {
        p->received += n;
        std::string_view head(p->buffer.data(), p->received);
        auto eol = head.find("\r\n");
        if (eol == std::string_view::npos) {
          if (ec || p->received == p->buffer.size())
            return p->finish(false, fmt::format("port {}: no HTTP status line", port));
          return http_read(p, port, want);
        }
        // "HTTP/1.1 200 OK"
        auto sp = head.find(' ');
        int code = 0;
        if (sp != std::string_view::npos && sp + 4 <= eol)
          for (std::size_t i = sp + 1; i < sp + 4; ++i)
            code = code * 10 + (head[i] >= '0' && head[i] <= '9' ? head[i] - '0' : 0);
        bool ok = want != 0 ? code == want : (code >= 200 && code < 400);
        p->finish(ok, fmt::format("port {}: HTTP status {}", port, code));
      });
}
}  // namespace

void probe_http(asio::io_context& io, int port, const std::string& path, int status, double timeout,
                ProbeDone done) {
  auto p = std::make_shared<NetProbe>(io, std::move(done));
  p->request = fmt::format("GET {} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nUser-Agent: corral\r\nConnection: close\r\n\r\n",
                           path.empty() ? "/" : path, port);
  p->arm(timeout);
  p->socket.async_connect(loopback(port), [p, port, status](const boost::system::error_code& ec) {
    if (ec) return p->finish(false, fmt::format("port {}: {}", port, ec.message()));
    asio::async_write(p->socket, asio::buffer(p->request),
                      [p, port, status](const boost::system::error_code& wec, std::size_t) {
                        if (wec) return p->finish(false, fmt::format("port {}: {}", port, wec.message()));
                        http_read(p, port, status);
                      });
  });
}

namespace {
struct ExecProbe : std::enable_shared_from_this<ExecProbe> {
  ExecProbe(asio::io_context& io, ProbeDone d) : pidfd(io), timer(io), done(std::move(d)) {}
  asio::posix::stream_descriptor pidfd;
  asio::steady_timer timer;
  ProbeDone done;
  GroupTracker tracker;
  pid_t pid = 0;
  bool timed_out = false;
};
}  // namespace

void probe_exec(asio::io_context& io, const std::vector<std::string>& argv,
                const std::vector<std::string>& env, const std::string& cwd, double timeout,
                ProbeDone done, GroupTracker tracker) {
  SpawnRequest req;
  req.argv = argv;
  req.env = env;
  req.cwd = cwd;
  auto spawned = spawn(req);
  if (!spawned) {
    // Report on the next turn, never from inside the caller's own call.
    asio::post(io, [done = std::move(done), msg = spawned.message]() { done(false, msg); });
    return;
  }
  auto p = std::make_shared<ExecProbe>(io, std::move(done));
  p->pid = spawned.pid;
  p->tracker = std::move(tracker);
  if (p->tracker.watch) p->tracker.watch(p->pid);
  p->pidfd.assign(spawned.pidfd.release());
  p->timer.expires_after(seconds(timeout));
  p->timer.async_wait([p](const boost::system::error_code& ec) {
    if (ec) return;
    p->timed_out = true;
    ::kill(-p->pid, SIGKILL);  // not reaped yet, so the group id is still ours
  });
  p->pidfd.async_wait(asio::posix::descriptor_base::wait_read, [p, timeout](const boost::system::error_code& ec) {
    if (ec) return;
    // Kill whatever the check left behind while the leader is unreaped and its group id
    // therefore still ours, then reap.
    ::kill(-p->pid, SIGKILL);
    siginfo_t info{};
    ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(p->pidfd.native_handle()), &info, WEXITED);
    if (p->tracker.unwatch) p->tracker.unwatch(p->pid);
    p->timer.cancel();
    boost::system::error_code ignored;
    p->pidfd.close(ignored);
    auto cb = std::move(p->done);
    if (p->timed_out) return cb(false, fmt::format("command did not finish within {}s", timeout));
    if (info.si_code == CLD_EXITED && info.si_status == 0) return cb(true, "command exited 0");
    if (info.si_code == CLD_EXITED) return cb(false, fmt::format("command exited {}", info.si_status));
    cb(false, fmt::format("command killed by signal {}", info.si_status));
  });
}

}  // namespace corral

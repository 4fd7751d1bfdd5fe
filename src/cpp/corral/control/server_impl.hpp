// The control server's inside, shared by server.cpp (transport) and handlers.cpp (what each
// endpoint does). Everything here runs on the server's own thread, except Core::on_event
// (the engine thread, under feeds_mutex and each Feed's mutex) and the stop counter.
#pragma once

#include <sys/types.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/basic_stream.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "corral/control/server.hpp"
#include "corral/control/static_files.hpp"

namespace corral::control {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;
inline constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

std::chrono::steady_clock::duration seconds_to_duration(double s);

// One event-stream client's buffer: filled by the engine thread, drained by the server.
struct Feed {
  explicit Feed(asio::io_context& io) : timer(io) {}
  std::string service;     // only this service's events; empty: every service
  bool logs_only = false;  // only log lines (a log follow)
  std::mutex mutex;
  std::deque<EngineEvent> events;
  std::size_t bytes = 0;
  bool overflow = false;   // fell behind past the budget: the client is dropped
  std::atomic<bool> wake_posted{false};
  asio::steady_timer timer;  // server thread only: the writer sleeps on it
};

// A stream endpoint's answer: the feed, what to send first, and the newest log line already
// in it (the feed may hold it too).
struct StreamPlan {
  std::shared_ptr<Feed> feed;
  std::string prelude;
  std::int64_t skip_until_ns = 0;
};

struct Reply {
  Response response;
  std::optional<StreamPlan> stream;
};

struct ControlServer::Core {
  Core(Stack& s, ServerOptions o) : stack(s), options(std::move(o)) {}
  // The feeds' timers belong to `io`: they must go while it still exists (members are
  // destroyed after this body, `io` among the first of them).
  ~Core() {
    std::lock_guard lock(feeds_mutex);
    feeds.clear();
  }
  Stack& stack;
  ServerOptions options;
  std::weak_ptr<Core> self;
  std::set<std::string> names;  // the stack's services: anything else is a 404
  std::map<std::string, StaticFile> files;  // the dashboard, read once at start-up
  std::mutex feeds_mutex;
  std::vector<std::shared_ptr<Feed>> feeds;
  std::mutex listener_mutex;  // taken before feeds_mutex, never inside the tap
  std::uint64_t listener = 0;  // the engine tap, registered while a feed exists
  int connections = 0;
  ino_t socket_inode = 0;
  mutable std::mutex stop_mutex;
  mutable std::condition_variable stop_cv;
  std::uint64_t stop_count = 0;
  std::atomic<bool> stopped{false};
  std::string session;               // the browser session cookie's value (TCP only)
  std::mutex login_mutex;
  std::deque<std::string> nonces;    // login links not used yet, newest last
  std::mutex documents_mutex;
  // GET /v1/runs: what the owner last published (set_document), else that there is no
  // history. Shared, so a request copies a pointer under the lock, not the document.
  std::shared_ptr<const std::string> runs_document;
  // Declared after everything the coroutines touch, so that destroying the io_context
  // (which destroys the suspended coroutines) happens while all of it still exists; the
  // acceptors come after it, as they need it to close.
  asio::io_context io{1};
  std::optional<asio::local::stream_protocol::acceptor> unix_acceptor;
  std::optional<asio::ip::tcp::acceptor> tcp_acceptor;
  // Set once TCP listens (at start, or later by POST /v1/login_url {"serve": true} on the
  // server thread); read by login_url() from other threads, hence atomic.
  std::atomic<unsigned short> tcp_port{0};

  void on_event(const EngineEvent& e);
  void drop_listener();
  std::shared_ptr<Feed> add_feed(std::string service, bool logs_only);
  void remove_feed(const std::shared_ptr<Feed>& f);
  void note_stop_request();
  asio::awaitable<bool> await_ready(const std::shared_ptr<Pending<Outcome>>& p, double timeout);
  std::string new_login_url();
  void listen_tcp();  // binds loopback TCP (options.tcp_host/tcp_port) with a fresh token
  bool spend_login(std::string_view nonce);
};

// `bytes` random bytes from the kernel, as hex.
std::string random_hex(std::size_t bytes);

// handlers.cpp
Response error_response(int status, std::string_view message);
asio::awaitable<Reply> handle(ControlServer::Core& core, const Request& req, bool tcp);

}  // namespace corral::control

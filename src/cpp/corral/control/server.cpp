// The control server's transport: listening sockets, one coroutine per connection, request
// limits and deadlines, and the event streams. What each endpoint does is in handlers.cpp.
#include "corral/control/server.hpp"

#include <signal.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/write.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <fmt/format.h>

#include "corral/control/rules.hpp"
#include "corral/control/server_impl.hpp"
#include "corral/control/views.hpp"
#include "corral/spawn/spawn.hpp"

namespace corral::control {

std::chrono::steady_clock::duration seconds_to_duration(double s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(s));
}

std::string random_hex(std::size_t bytes) {
  std::vector<unsigned char> raw(bytes);
  std::size_t got = 0;
  while (got < bytes) {
    ssize_t n = ::getrandom(raw.data() + got, bytes - got, 0);
    if (n < 0 && errno != EINTR) throw Error("cannot read random bytes");
    if (n > 0) got += static_cast<std::size_t>(n);
  }
  std::string out;
  for (auto b : raw) out += fmt::format("{:02x}", b);
  return out;
}

std::string ControlServer::Core::new_login_url() {
  unsigned short port = tcp_port.load();
  if (port == 0) throw Error("the control API is not on TCP (see Stack.serve_api)");
  std::string nonce = random_hex(16);
  std::lock_guard lock(login_mutex);
  nonces.push_back(nonce);
  if (nonces.size() > 32) nonces.pop_front();  // links nobody opened do not pile up
  return fmt::format("http://127.0.0.1:{}/v1/login?nonce={}", port, nonce);
}

bool ControlServer::Core::spend_login(std::string_view nonce) {
  std::lock_guard lock(login_mutex);
  for (auto it = nonces.begin(); it != nonces.end(); ++it)
    if (token_equal(*it, nonce)) {
      nonces.erase(it);
      return true;
    }
  return false;
}

// Engine thread: copy the event into each feed that wants it and wake that feed's writer.
// Nothing here blocks or grows without bound: a feed past its budget is marked overflowed
// (its client is then dropped) and holds nothing more.
void ControlServer::Core::on_event(const EngineEvent& e) {
  std::lock_guard lock(feeds_mutex);
  for (const auto& f : feeds) {
    if (f->logs_only && e.kind != EngineEvent::Kind::log) continue;
    if (!f->service.empty() && e.service != f->service) continue;
    {
      std::lock_guard fl(f->mutex);
      if (f->overflow) continue;
      std::size_t cost = 64 + e.service.size() + e.text.size();
      if (f->bytes + cost > options.max_feed_bytes) {
        f->overflow = true;
        f->events.clear();
        f->bytes = 0;
      } else {
        f->events.push_back(e);
        f->bytes += cost;
      }
    }
    // One wake-up in flight per feed, however many lines arrive meanwhile.
    if (!f->wake_posted.exchange(true))
      asio::post(io, [w = std::weak_ptr<Feed>(f)] {
        if (auto feed = w.lock()) {
          feed->wake_posted = false;
          feed->timer.cancel();
        }
      });
  }
}

std::shared_ptr<Feed> ControlServer::Core::add_feed(std::string service, bool logs_only) {
  auto f = std::make_shared<Feed>(io);
  f->service = std::move(service);
  f->logs_only = logs_only;
  {
    std::lock_guard lock(feeds_mutex);
    feeds.push_back(f);
  }
  // The engine's tap only while someone follows: with it, the engine builds an event for
  // every log line of the stack (capture ran at about half speed with an idle tap). Never
  // under feeds_mutex: on_event takes it under the engine's tap lock.
  std::lock_guard lock(listener_mutex);
  if (listener == 0 && !stopped) listener = stack.add_listener([this](const EngineEvent& e) { on_event(e); });
  return f;
}

void ControlServer::Core::remove_feed(const std::shared_ptr<Feed>& f) {
  {
    std::lock_guard lock(feeds_mutex);
    std::erase(feeds, f);
    if (!feeds.empty()) return;
  }
  drop_listener();
}

void ControlServer::Core::drop_listener() {
  std::lock_guard lock(listener_mutex);
  {
    std::lock_guard feeds_lock(feeds_mutex);  // a feed added meanwhile keeps the tap
    if (!feeds.empty() && !stopped) return;
  }
  if (listener != 0) stack.remove_listener(listener);
  listener = 0;
}

void ControlServer::Core::note_stop_request() {
  {
    std::lock_guard lock(stop_mutex);
    ++stop_count;
  }
  stop_cv.notify_all();
}

// Suspends until `p` is set (true) or `timeout` seconds pass (false; < 0: no limit). The
// Pending's hook posts the wake-up here, so the server thread is never held.
asio::awaitable<bool> ControlServer::Core::await_ready(const std::shared_ptr<Pending<Outcome>>& p, double timeout) {
  auto timer = std::make_shared<asio::steady_timer>(io);
  if (timeout < 0)
    timer->expires_at(asio::steady_timer::time_point::max());
  else
    timer->expires_after(seconds_to_duration(timeout));
  std::weak_ptr<Core> core = self;
  std::weak_ptr<asio::steady_timer> weak_timer = timer;
  p->on_ready([core, weak_timer] {
    if (auto c = core.lock())
      asio::post(c->io, [weak_timer] {
        if (auto t = weak_timer.lock()) t->cancel();
      });
  });
  while (!p->ready()) {
    auto [ec] = co_await timer->async_wait(use_tuple);
    if (!ec) co_return p->ready();  // the deadline passed
  }
  co_return true;
}

namespace {

template <class Stream>
asio::awaitable<bool> write_response(Stream& stream, Response& res, double timeout) {
  stream.expires_after(seconds_to_duration(timeout));
  auto [ec, n] = co_await http::async_write(stream, res, use_tuple);
  co_return !ec;
}

template <class Stream>
asio::awaitable<bool> write_text(Stream& stream, const std::string& text, double timeout) {
  stream.expires_after(seconds_to_duration(timeout));
  auto [ec, n] = co_await asio::async_write(stream, asio::buffer(text), use_tuple);
  co_return !ec;
}

std::string sse_frame(std::string_view event, const std::string& data) {
  return fmt::format("event: {}\ndata: {}\n\n", event, data);
}

// Writes the feed's events as they come until the client goes away, falls behind past its
// budget (dropped), or the server stops. The response is delimited by closing the
// connection, so no chunking is needed.
template <class Stream>
asio::awaitable<void> run_stream(ControlServer::Core& core, Stream& stream, StreamPlan plan) {
  const auto& opt = core.options;
  std::string head =
      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-store\r\n"
      "X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n";
  if (!co_await write_text(stream, head + plan.prelude, opt.write_timeout)) co_return;
  auto& feed = *plan.feed;
  for (;;) {
    std::deque<EngineEvent> batch;
    bool overflow = false;
    {
      std::lock_guard lock(feed.mutex);
      overflow = feed.overflow;
      batch.swap(feed.events);
      feed.bytes = 0;
    }
    if (overflow) co_return;  // it could not keep up: dropped, never waited for
    if (batch.empty()) {
      feed.timer.expires_after(seconds_to_duration(opt.keepalive_interval));
      auto [ec] = co_await feed.timer.async_wait(use_tuple);
      // A comment now and then tells a vanished client from an idle stack.
      if (!ec && !co_await write_text(stream, ": keepalive\n\n", opt.write_timeout)) co_return;
      continue;
    }
    std::string out;
    for (const auto& e : batch) {
      // Lines already sent in the prelude (the log tail) are not sent twice.
      if (e.kind == EngineEvent::Kind::log && e.time_ns <= plan.skip_until_ns) continue;
      out += sse_frame(event_name(e), boost::json::serialize(event_json(e)));
    }
    if (!out.empty() && !co_await write_text(stream, out, opt.write_timeout)) co_return;
  }
}

// One connection: requests one after another (keep-alive), each within the read deadline
// and the size limits; then, for a stream endpoint, the stream until the end.
template <class Protocol>
asio::awaitable<void> session(ControlServer::Core& core, beast::basic_stream<Protocol> stream, bool tcp) {
  ++core.connections;
  struct Count {
    int& n;
    ~Count() { --n; }
  } count{core.connections};
  const auto& opt = core.options;
  beast::flat_buffer buffer;
  try {
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(opt.max_header_bytes));
      parser.body_limit(opt.max_body_bytes);
      stream.expires_after(seconds_to_duration(opt.read_timeout));
      auto [ec, n] = co_await http::async_read(stream, buffer, parser, use_tuple);
      if (ec) {
        // A client that went away or stalled past the deadline is just dropped.
        if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == asio::error::eof ||
            ec == asio::error::connection_reset || ec == asio::error::operation_aborted)
          co_return;
        int status = ec == http::error::header_limit ? 431 : ec == http::error::body_limit ? 413 : 400;
        Response res = error_response(status, fmt::format("bad request: {}", ec.message()));
        res.keep_alive(false);
        res.prepare_payload();
        co_await write_response(stream, res, opt.write_timeout);
        co_return;
      }
      Request req = parser.release();
      Reply reply = co_await handle(core, req, tcp);
      if (reply.stream) {
        auto feed = reply.stream->feed;
        co_await run_stream(core, stream, std::move(*reply.stream));
        core.remove_feed(feed);
        co_return;
      }
      reply.response.keep_alive(req.keep_alive());
      reply.response.prepare_payload();
      if (!co_await write_response(stream, reply.response, opt.write_timeout)) co_return;
      if (!reply.response.keep_alive()) co_return;
    }
  } catch (const std::exception&) {
    // Out of memory or a bug in one request: that connection goes, the server stays.
  }
}

template <class Acceptor, class Protocol>
asio::awaitable<void> accept_loop(ControlServer::Core& core, Acceptor& acceptor, bool tcp) {
  asio::steady_timer pause(core.io);
  for (;;) {
    auto [ec, socket] = co_await acceptor.async_accept(use_tuple);
    if (ec == asio::error::operation_aborted) co_return;
    if (ec) {
      // Out of descriptors, say: wait a little rather than spin on a failing accept.
      pause.expires_after(std::chrono::milliseconds(50));
      co_await pause.async_wait(use_tuple);
      continue;
    }
    if (!tcp) {
      // The socket file is 0600 in a 0700 directory; the peer's uid is checked as well,
      // so a descriptor passed to another user's process does not let it in.
      ucred cred{};
      socklen_t len = sizeof cred;
      if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.uid != ::geteuid())
        continue;
    }
    if (core.connections >= core.options.max_connections) continue;  // closed at once
    asio::co_spawn(core.io, session<Protocol>(core, beast::basic_stream<Protocol>(std::move(socket)), tcp),
                   asio::detached);
  }
}

void bind_unix(ControlServer::Core& core) {
  const std::string& path = core.options.unix_path;
  if (path.size() >= sizeof(sockaddr_un{}.sun_path))
    throw Error(fmt::format("control socket path too long ({} bytes, at most {}): {}", path.size(),
                            sizeof(sockaddr_un{}.sun_path) - 1, path));
  using local = asio::local::stream_protocol;
  auto& acc = core.unix_acceptor.emplace(core.io);
  acc.open();
  boost::system::error_code ec;
  acc.bind(local::endpoint(path), ec);
  if (ec == asio::error::address_in_use) {
    // Left by an owner that died, or served by a live one: only a socket nobody answers
    // on is replaced.
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode))
      throw Error(fmt::format("cannot serve the control API at {}: the path exists and is not a socket", path));
    local::socket probe(core.io);
    boost::system::error_code probe_ec;
    probe.connect(local::endpoint(path), probe_ec);
    if (!probe_ec) throw Error(fmt::format("cannot serve the control API at {}: in use by a running stack", path));
    ::unlink(path.c_str());
    ec.clear();
    acc.bind(local::endpoint(path), ec);
  }
  if (ec) throw Error(fmt::format("cannot serve the control API at {}: {}", path, ec.message()));
  if (::chmod(path.c_str(), 0600) != 0) throw Error(fmt::format("cannot make {} private", path));
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) core.socket_inode = st.st_ino;
  acc.listen();
}

void bind_tcp(ControlServer::Core& core) {
  auto& opt = core.options;
  if (opt.token.size() < 16) throw Error("the control API on TCP needs a token of at least 16 characters");
  boost::system::error_code ec;
  auto address = asio::ip::make_address(opt.tcp_host, ec);
  if (ec || !address.is_loopback())
    throw Error(fmt::format("the control API listens on loopback addresses only, not '{}'", opt.tcp_host));
  auto& acc = core.tcp_acceptor.emplace(core.io);
  asio::ip::tcp::endpoint ep(address, opt.tcp_port);
  acc.open(ep.protocol());
  acc.set_option(asio::socket_base::reuse_address(true));
  acc.bind(ep, ec);
  if (ec) throw Error(fmt::format("cannot serve the control API on {}:{}: {}", opt.tcp_host, opt.tcp_port, ec.message()));
  acc.listen();
  // The session first: a login link names the port only once the cookie it sets exists.
  core.session = random_hex(16);
  core.tcp_port = acc.local_endpoint().port();
}

}  // namespace

// Server thread: TCP turned on for a running server (`corral dashboard` on a stack that was
// started without it). Nobody outside this process needs the token then (the browser gets
// the session cookie), so a fresh one is made and never written anywhere.
void ControlServer::Core::listen_tcp() {
  if (tcp_acceptor) return;
  if (options.token.empty()) options.token = random_hex(16);
  try {
    bind_tcp(*this);
  } catch (...) {
    tcp_acceptor.reset();
    throw;
  }
  asio::co_spawn(io, accept_loop<asio::ip::tcp::acceptor, asio::ip::tcp>(*this, *tcp_acceptor, true), asio::detached);
}

ControlServer::ControlServer(Stack& stack, ServerOptions options) {
  if (options.unix_path.empty() && !options.tcp) throw Error("the control server needs a socket path or TCP");
  owner_ = ::getpid();
  core_ = std::make_shared<Core>(stack, std::move(options));
  core_->self = core_;
  for (auto& n : stack.service_names()) core_->names.insert(n);
  core_->files = load_static_files(core_->options.static_root);
  if (!core_->options.unix_path.empty()) bind_unix(*core_);
  try {
    if (core_->options.tcp) bind_tcp(*core_);
  } catch (...) {
    stop();
    throw;
  }
  using local = asio::local::stream_protocol;
  if (core_->unix_acceptor)
    asio::co_spawn(core_->io, accept_loop<local::acceptor, local>(*core_, *core_->unix_acceptor, false), asio::detached);
  if (core_->tcp_acceptor)
    asio::co_spawn(core_->io, accept_loop<asio::ip::tcp::acceptor, asio::ip::tcp>(*core_, *core_->tcp_acceptor, true),
                   asio::detached);
  // Signals belong to the host program's main thread: this thread takes none (as the
  // engine thread), so no handler ever runs here and no system call here sees EINTR.
  thread_ = start_own_thread([core = core_] {
    auto work = asio::make_work_guard(core->io);
    for (;;) {
      try {
        core->io.run();
        return;
      } catch (...) {
        // A handler threw: keep serving the other connections.
      }
    }
  });
}

ControlServer::~ControlServer() {
  if (::getpid() != owner_) {
    // A forked child's copy: its thread object names a thread of the parent (destroying a
    // joinable std::thread terminates) and its locks may have been held at the fork. One
    // deliberate leak per fork, as the engine does.
    new std::shared_ptr<Core>(std::move(core_));
    new std::thread(std::move(thread_));
    return;
  }
  stop();
}

void ControlServer::stop() {
  if (::getpid() != owner_) return;
  if (!core_ || core_->stopped.exchange(true)) return;
  core_->drop_listener();
  core_->io.stop();
  if (thread_.joinable()) thread_.join();
  boost::system::error_code ec;
  if (core_->unix_acceptor) {
    core_->unix_acceptor->close(ec);
    // Only our own socket: never one a successor bound at the same path after us.
    struct stat st {};
    const auto& path = core_->options.unix_path;
    if (::lstat(path.c_str(), &st) == 0 && st.st_ino == core_->socket_inode) ::unlink(path.c_str());
  }
  if (core_->tcp_acceptor) core_->tcp_acceptor->close(ec);
  {
    std::lock_guard lock(core_->stop_mutex);
  }
  core_->stop_cv.notify_all();
}

const std::string& ControlServer::unix_path() const noexcept { return core_->options.unix_path; }
unsigned short ControlServer::tcp_port() const noexcept { return core_->tcp_port; }

std::uint64_t ControlServer::stop_requests() const noexcept {
  std::lock_guard lock(core_->stop_mutex);
  return core_->stop_count;
}

std::string ControlServer::login_url() { return core_->new_login_url(); }

void ControlServer::set_document(std::string_view name, std::string_view json) {
  if (name != "runs") throw Error(fmt::format("no document named '{}' (known: runs)", name));
  boost::system::error_code ec;
  auto v = boost::json::parse(json, ec);
  if (ec || !v.is_object()) throw Error(fmt::format("the '{}' document must be a JSON object", name));
  // Re-serialized: what the server sends is valid, compact JSON whatever the caller wrote.
  auto doc = std::make_shared<const std::string>(boost::json::serialize(v));
  std::lock_guard lock(core_->documents_mutex);
  core_->runs_document = std::move(doc);
}

bool ControlServer::wait_stop_request(double timeout) const {
  std::unique_lock lock(core_->stop_mutex);
  auto done = [&] { return core_->stop_count > 0 || core_->stopped.load(); };
  if (timeout < 0) {
    core_->stop_cv.wait(lock, done);
  } else {
    core_->stop_cv.wait_for(lock, seconds_to_duration(timeout), done);
  }
  return core_->stop_count > 0;
}

}  // namespace corral::control

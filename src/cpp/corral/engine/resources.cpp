// Resource claims of a service (resources/registry.hpp): made before the first spawn of a
// start, kept across its restarts and backoff, released when it settles. Claims whose type
// has a check command run on the claim_jobs thread (the check may take seconds); the
// service stays pending meanwhile, and the result comes back to the engine thread.
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>

#include "corral/engine/engine_impl.hpp"

namespace corral {
namespace {

// How long a `wait` claim on an exhausted pool waits before it looks again. A modest
// timer, not inotify: a release is an unlink in a directory many stacks share, and the
// next look costs a few opens.
constexpr double wait_retry_seconds = 0.25;

ResourceType resolve_type(const StackSpec& spec, const std::string& name) {
  for (const auto& d : spec.resource_types) {
    if (d.name != name) continue;
    ResourceType t;
    if (auto b = builtin_resource_type(name)) t = *b;  // keeps a built-in's probe
    t.name = name;
    if (d.has_range) {
      t.kind = ResourceType::Kind::range;
      t.lo = d.range_lo;
      t.hi = d.range_hi;
    } else if (!d.values.empty()) {
      t.kind = ResourceType::Kind::list;
      t.values = d.values;
    }
    t.check = d.check;
    t.env = d.env;
    t.timeout = d.timeout;
    return t;
  }
  if (auto b = builtin_resource_type(name)) return *b;
  ResourceType t;  // an undeclared name: free-form values, exclusive machine-wide
  t.name = name;
  return t;
}

}  // namespace

bool Engine::Impl::claim_resources(StackState& st, Svc& s) {
  if (s.claims_held || s.spec.resources.empty()) return true;
  if (s.claiming) return false;
  s.claim_timer.cancel();
  ClaimOwner owner{st.spec.name.empty() ? st.id : st.spec.name, s.spec.name};
  std::vector<std::pair<ResourceType, ClaimRequest>> plan;
  bool slow = false, waits = false;
  for (const auto& r : s.spec.resources) {
    auto t = resolve_type(st.spec, r.name);
    slow = slow || !t.check.empty();
    waits = waits || r.wait;
    plan.push_back({std::move(t), ClaimRequest{r.count, r.values}});
  }
  auto work = [plan, owner] {
    std::vector<std::pair<std::string, AllocationResult>> got;
    for (const auto& [t, req] : plan) {
      AllocationResult a;
      try {
        a = allocate(t, req, owner);
      } catch (const std::exception& e) {
        a.error = e.what();
      }
      bool failed = !a.error.empty();
      got.emplace_back(t.name, std::move(a));
      if (failed) break;  // all or nothing: what we hold so far goes with `got`
    }
    return got;
  };
  if (!slow) {
    on_claims(st, s, work(), waits);
    return s.claims_held;
  }
  s.claiming = true;
  s.reason = "checking resources";
  publish_status(st, s);
  auto self = st.shared_from_this();
  unsigned gen = s.claim_gen;
  claim_jobs.post([this, self, &s, gen, work, waits] {
    auto got = std::make_shared<std::vector<std::pair<std::string, AllocationResult>>>(work());
    asio::post(io, [this, self, &s, gen, got, waits] {
      if (s.claim_gen != gen || self->closed) return;  // dropped meanwhile: `got` releases them
      s.claiming = false;
      on_claims(*self, s, std::move(*got), waits);
      if (s.claims_held) try_start(*self, s);
      changed(*self, s);
    });
  });
  return false;
}

void Engine::Impl::on_claims(StackState& st, Svc& s, std::vector<std::pair<std::string, AllocationResult>> got,
                             bool waits) {
  (void)waits;
  for (auto& [got_name, a] : got) {
    if (a.error.empty()) continue;
    std::string name = got_name, error = a.error;
    bool exhausted = a.exhausted;
    const ResourceClaimSpec* spec = nullptr;
    for (const auto& r : s.spec.resources)
      if (r.name == name) spec = &r;
    got.clear();  // release whatever was had: all or nothing
    if (exhausted && spec && spec->wait && s.state == State::pending) {
      s.reason = "waiting for " + name;
      publish_status(st, s);
      auto self = st.shared_from_this();
      unsigned gen = s.claim_gen;
      s.claim_timer.expires_after(to_duration(wait_retry_seconds));
      s.claim_timer.async_wait([this, self, &s, gen](const boost::system::error_code& ec) {
        if (!ec && s.claim_gen == gen && !self->closed) try_start(*self, s);
      });
      return;
    }
    record_line(st, s, Stream::err, "corral: " + error);
    if (s.state == State::pending) dispatch(st, s, Event::spawn_failed, error);
    return;
  }
  s.resources.clear();
  for (auto& [name, a] : got)
    for (auto& c : a.claims) {
      s.resources[name].push_back(c.value());
      s.claims.push_back(std::move(c));
    }
  s.claims_held = true;
  s.reason.clear();
}

// listen=[...]: the port is bound and listening before the first spawn, and this socket,
// not the service, owns it across restarts: a client that connects while the service
// restarts waits in the backlog and is served by the next run. Empty string on success.
std::string Engine::Impl::open_listeners(Svc& s) {
  if (!s.listen_fds.empty() || s.spec.listen.empty()) return {};
  for (const auto& name : s.spec.listen) {
    std::size_t i = 0;
    while (i < s.spec.ports.size() && s.spec.ports[i] != name) ++i;
    if (i >= s.leases.size()) return fmt::format("listen: no port '{}'", name);
    PortLease& lease = s.leases[i];
    lease.release_socket();  // the reservation gives way to the listener
    Fd sock(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    int one = 1;
    if (sock) ::setsockopt(sock.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    addr.sin_port = htons(static_cast<std::uint16_t>(lease.port()));
    if (!sock || ::bind(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(sock.get(), SOMAXCONN) != 0) {
      std::string why = std::strerror(errno);
      s.listen_fds.clear();
      return fmt::format("cannot listen on port {} ({}): {}", lease.port(), name, why);
    }
    s.listen_fds.push_back(std::move(sock));
  }
  return {};
}

bool Engine::Impl::is_listen_port(const Svc& s, std::size_t lease) const {
  if (lease >= s.spec.ports.size() || s.listen_fds.empty()) return false;
  for (const auto& l : s.spec.listen)
    if (l == s.spec.ports[lease]) return true;
  return false;
}

void Engine::Impl::release_claims(Svc& s) {
  ++s.claim_gen;
  s.claim_timer.cancel();
  s.claiming = false;
  s.claims_held = false;
  s.claims.clear();  // each unlinks its file under its lock
  s.resources.clear();
  s.listen_fds.clear();
}

}  // namespace corral

// What a service is started with: its ports, its private directory, its templates filled
// in, and the environment it gets (the owner's, minus what must not leak, plus corral's).
#include <sys/stat.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "corral/engine/engine_impl.hpp"
#include "corral/resources/runtime.hpp"

namespace corral {
namespace {

std::string upper(std::string s) {
  for (auto& c : s) c = (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : (c == '-' || c == '.') ? '_' : c;
  return s;
}

}  // namespace

// The command as a shell would need it typed, for --verbose.
std::string shell_join(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) {
    if (!out.empty()) out += ' ';
    bool plain = !a.empty() && a.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%") == std::string::npos;
    if (plain) {
      out += a;
      continue;
    }
    out += '\'';
    for (char c : a) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    out += '\'';
  }
  return out;
}

// Never throws for a taken pinned port: the start request allocates every port before
// any spawn, and that failure belongs to the service (a StartError naming the holder), so
// it is kept in port_error for the spawn to report.
void Engine::Impl::ensure_ports(Svc& s) {
  if (!s.leases.empty() || s.spec.ports.empty()) return;
  ClaimOwner owner{{}, s.spec.name};
  for (const auto& st : stacks)  // which stack: for the claim file's display only
    if (s.index < st->services.size() && st->services[s.index].get() == &s)
      owner.stack = st->spec.name.empty() ? st->id : st->spec.name;
  s.port_error.clear();
  try {
    for (const auto& name : s.spec.ports) {
      auto pin = s.spec.pinned_ports.find(name);
      s.leases.push_back(pin == s.spec.pinned_ports.end() ? allocate_port(owner) : claim_port(pin->second, owner));
      s.ports[name] = s.leases.back().port();
    }
  } catch (const Error& e) {
    s.leases.clear();
    s.ports.clear();
    s.port_error = e.what();
  }
}

std::string Engine::Impl::ensure_stack_tmpdir(StackState& st) {
  if (!st.tmpdir.empty()) return st.tmpdir;
  std::string base = runtime_subdir("stacks");  // private, never a planted symlink
  std::string tmpl = fmt::format("{}/{}-XXXXXX", base, st.spec.name.empty() ? "stack" : st.spec.name.substr(0, 24));
  if (::mkdtemp(tmpl.data()) == nullptr)
    throw Error(fmt::format("cannot create a private directory: {}", std::strerror(errno)));
  st.tmpdir = tmpl;
  return st.tmpdir;
}

std::string Engine::Impl::ensure_tmpdir(StackState& st, Svc& s) {
  if (!s.tmpdir.empty()) return s.tmpdir;
  std::string dir = ensure_stack_tmpdir(st) + "/" + s.spec.name;
  ::mkdir(dir.c_str(), 0700);
  s.tmpdir = dir;
  return dir;
}

TemplateResolver Engine::Impl::resolver(StackState& st, Svc& s) {
  return [this, &st, &s](std::string_view key) -> std::optional<std::string> {
    if (key == "name") return s.spec.name;
    if (key == "tmpdir") return ensure_tmpdir(st, s);
    if (key.rfind("res.", 0) == 0) {
      std::string_view rest = key.substr(4);
      auto dot = rest.find('.');
      auto it = s.resources.find(std::string(rest.substr(0, dot)));
      if (it == s.resources.end()) return std::nullopt;
      if (dot == std::string_view::npos) {
        std::string joined;
        for (const auto& v : it->second) joined += (joined.empty() ? "" : ",") + v;
        return joined;
      }
      std::size_t i = std::strtoul(std::string(rest.substr(dot + 1)).c_str(), nullptr, 10);
      if (i < it->second.size()) return it->second[i];
      return std::nullopt;
    }
    if (key.rfind("port.", 0) == 0) {
      ensure_ports(s);
      auto it = s.ports.find(std::string(key.substr(5)));
      if (it != s.ports.end()) return std::to_string(it->second);
      return std::nullopt;
    }
    auto dot = key.find(".port.");
    if (dot != std::string_view::npos) {
      auto it = st.index.find(std::string(key.substr(0, dot)));
      if (it == st.index.end()) return std::nullopt;
      Svc& o = *st.services[it->second];
      ensure_ports(o);
      auto p = o.ports.find(std::string(key.substr(dot + 6)));
      if (p != o.ports.end()) return std::to_string(p->second);
    }
    return std::nullopt;
  };
}

namespace {

// What the owner inherited from its own supervisor must not leak into services: a
// NOTIFY_SOCKET would let them notify systemd (or an outer corral), PORT and CORRAL_PORT_*
// would name the owner's ports, not theirs.
bool owner_only(const std::string& k) {
  return k == "NOTIFY_SOCKET" || k == "PORT" || k == "CORRAL_SERVICE" || k == "CORRAL_STACK" ||
         k.rfind("CORRAL_PORT_", 0) == 0 || k.rfind("CORRAL_RES_", 0) == 0 || k == "LISTEN_FDS" ||
         k == "LISTEN_PID" || k == "LISTEN_FDNAMES";
}

std::string_view key_of(const std::string& entry) { return std::string_view(entry).substr(0, entry.find('=')); }

}  // namespace

std::vector<std::string> Engine::Impl::build_env(StackState& st, Svc& s, const TemplateResolver& resolve) {
  // The owner's environment is the same for every spawn of the stack: filtered and joined
  // once (a copy of it per spawn was an eighth of the engine's work in a start of 1,000).
  if (!st.inherited_env_made) {
    for (const auto& [k, v] : st.spec.base_env)
      if (!owner_only(k)) st.inherited_env.push_back(k + "=" + v);
    st.inherited_env_made = true;
  }
  // What this run sets, over the inherited environment.
  std::map<std::string, std::string> env;
  env["CORRAL_STACK"] = st.id;
  env["CORRAL_SERVICE"] = s.spec.name;
  for (const auto& [name, port] : s.ports) env["CORRAL_PORT_" + upper(name)] = std::to_string(port);
  if (s.ports.size() == 1) env["PORT"] = std::to_string(s.ports.begin()->second);
  if (!s.notify_path.empty()) env["NOTIFY_SOCKET"] = s.notify_path;
  if (!s.listen_fds.empty()) {
    env["LISTEN_FDS"] = std::to_string(s.listen_fds.size());
    std::string names;
    for (const auto& l : s.spec.listen) names += (names.empty() ? "" : ":") + l;
    env["LISTEN_FDNAMES"] = names;
  }
  for (const auto& [name, values] : s.resources) {
    std::string joined;
    for (const auto& v : values) joined += (joined.empty() ? "" : ",") + v;
    env["CORRAL_RES_" + upper(name)] = joined;
    for (const auto& t : st.spec.resource_types)
      if (t.name == name && !t.env.empty()) env[t.env] = joined;
  }
  for (const auto& [k, v] : s.spec.env) env[k] = render_template(v, resolve);
  // Both are sorted by key: merge them, the run's value winning.
  std::vector<std::string> out;
  out.reserve(st.inherited_env.size() + env.size());
  auto set = env.begin();
  for (const auto& entry : st.inherited_env) {
    auto key = key_of(entry);
    while (set != env.end() && std::string_view(set->first) < key) {
      out.push_back(set->first + "=" + set->second);
      ++set;
    }
    if (set != env.end() && std::string_view(set->first) == key) continue;  // the run's comes next
    out.push_back(entry);
  }
  for (; set != env.end(); ++set) out.push_back(set->first + "=" + set->second);
  return out;
}

}  // namespace corral

#include "corral/template/template.hpp"

#include <fmt/format.h>

#include "corral/core/types.hpp"

namespace corral {
namespace {
std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}
}  // namespace

std::string render_template(std::string_view text, const TemplateResolver& resolve) {
  std::string out;
  out.reserve(text.size());
  std::size_t pos = 0;
  while (true) {
    auto open = text.find("{{", pos);
    if (open == std::string_view::npos) {
      out.append(text.substr(pos));
      return out;
    }
    out.append(text.substr(pos, open - pos));
    auto close = text.find("}}", open + 2);
    if (close == std::string_view::npos)
      throw ConfigError(fmt::format("unclosed '{{{{' in template \"{}\"", text));
    auto key = trim(text.substr(open + 2, close - open - 2));
    // {{ "..." }} is a literal, the way to write "{{" itself: {{ "{{" }}.Names}}
    if (key.size() >= 2 && key.front() == '"' && key.back() == '"') {
      out.append(key.substr(1, key.size() - 2));
      pos = close + 2;
      continue;
    }
    auto value = resolve(key);
    if (!value) throw ConfigError(fmt::format("unknown template key '{{{{{}}}}}' in \"{}\"", key, text));
    out.append(*value);
    pos = close + 2;
  }
}

}  // namespace corral

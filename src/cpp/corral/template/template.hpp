// `{{...}}` templates, filled when a service starts: {{name}}, {{tmpdir}}, {{port.NAME}},
// {{SERVICE.port.NAME}}. The same parser validates a spec up front, so a typo is a
// ConfigError before anything runs rather than a failure half-way through a start.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace corral {

// Returns the value of a key ("port.http", "db.port.main", "name", "tmpdir"), or nullopt
// when the key is unknown.
using TemplateResolver = std::function<std::optional<std::string>(std::string_view key)>;

// Replaces every {{ key }} (spaces allowed inside the braces); {{ "text" }} is the literal
// text, so {{ "{{" }} writes a "{{" that is not a template. Throws ConfigError naming
// the key, or an unclosed "{{". Text without "{{" is returned unchanged.
std::string render_template(std::string_view text, const TemplateResolver& resolve);

}  // namespace corral

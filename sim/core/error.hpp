// Typed input errors. Libraries throw them; only the command line maps them to messages
// and exit codes.
#pragma once

#include <stdexcept>
#include <string>

namespace trainsim {

/// Bad user input: an impossible or inconsistent value. `key` is the scenario key at fault
/// in dotted form ("parallel.tp"), so the config layer can point at its file:line:column;
/// empty when no single key is to blame.
class InputError : public std::invalid_argument {
 public:
  InputError(std::string key, const std::string& message)
      : std::invalid_argument(message), key_(std::move(key)) {}
  [[nodiscard]] const std::string& key() const { return key_; }

 private:
  std::string key_;
};

}  // namespace trainsim

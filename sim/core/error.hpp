// Typed input errors. Libraries throw them; only the command line maps them to messages
// and exit codes.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

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

/// An input file that cannot be used: what() is "file:line:column: message". The config
/// layer's ConfigError and the profile reader's ProfileError are this error.
class FileError : public std::runtime_error {
 public:
  FileError(std::string file, int line, int column, const std::string& message)
      : std::runtime_error(file + ":" + std::to_string(line) + ":" + std::to_string(column) +
                           ": " + message),
        file_(std::move(file)),
        line_(line),
        column_(column),
        message_(message) {}
  [[nodiscard]] const std::string& file() const { return file_; }
  [[nodiscard]] int line() const { return line_; }
  [[nodiscard]] int column() const { return column_; }
  [[nodiscard]] const std::string& message() const { return message_; }

 private:
  std::string file_;
  int line_, column_;
  std::string message_;
};

}  // namespace trainsim

// Simulated time: a strong int64 count of picoseconds.
//
// One type serves for instants and durations. The resolution is fixed at compile time
// (1 ps, as OMNeT++'s default) and gives about 106 days of range, far beyond one training
// step. Arithmetic is checked: overflow throws std::overflow_error instead of wrapping.
// There is no implicit conversion from floating point; use Time::from_seconds(), which
// rounds to the nearest picosecond.
#pragma once

#include <cmath>
#include <compare>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

namespace trainsim {

class Time {
 public:
  constexpr Time() = default;

  static constexpr Time ps(std::int64_t v) { return Time(v); }
  static constexpr Time ns(std::int64_t v) { return Time(checked_mul(v, 1'000)); }
  static constexpr Time us(std::int64_t v) { return Time(checked_mul(v, 1'000'000)); }
  static constexpr Time ms(std::int64_t v) { return Time(checked_mul(v, 1'000'000'000)); }
  static constexpr Time zero() { return Time(0); }
  static constexpr Time max() { return Time(std::numeric_limits<std::int64_t>::max()); }

  /// Seconds (double) to Time, rounded to the nearest picosecond.
  /// Throws std::domain_error for NaN or negative values, std::overflow_error when the
  /// value does not fit in int64 picoseconds (~106 days).
  static Time from_seconds(double seconds) {
    if (std::isnan(seconds) || seconds < 0.0) {
      throw std::domain_error("Time::from_seconds: negative or NaN duration " +
                              std::to_string(seconds));
    }
    const double ps = std::nearbyint(seconds * 1e12);
    if (ps >= 9.2e18) throw std::overflow_error("Time::from_seconds: out of range");
    return Time(static_cast<std::int64_t>(ps));
  }

  [[nodiscard]] constexpr std::int64_t count_ps() const { return ps_; }
  [[nodiscard]] constexpr double seconds() const { return static_cast<double>(ps_) * 1e-12; }
  [[nodiscard]] constexpr double microseconds() const { return static_cast<double>(ps_) * 1e-6; }

  constexpr Time operator+(Time o) const { return Time(checked_add(ps_, o.ps_)); }
  constexpr Time operator-(Time o) const { return Time(checked_sub(ps_, o.ps_)); }
  constexpr Time& operator+=(Time o) { return *this = *this + o; }
  constexpr Time& operator-=(Time o) { return *this = *this - o; }
  constexpr Time operator*(std::int64_t k) const { return Time(checked_mul(ps_, k)); }
  constexpr auto operator<=>(const Time&) const = default;

 private:
  constexpr explicit Time(std::int64_t v) : ps_(v) {}

  static constexpr std::int64_t checked_add(std::int64_t a, std::int64_t b) {
    std::int64_t r = 0;
    if (__builtin_add_overflow(a, b, &r)) throw std::overflow_error("Time: overflow in +");
    return r;
  }
  static constexpr std::int64_t checked_sub(std::int64_t a, std::int64_t b) {
    std::int64_t r = 0;
    if (__builtin_sub_overflow(a, b, &r)) throw std::overflow_error("Time: overflow in -");
    return r;
  }
  static constexpr std::int64_t checked_mul(std::int64_t a, std::int64_t b) {
    std::int64_t r = 0;
    if (__builtin_mul_overflow(a, b, &r)) throw std::overflow_error("Time: overflow in *");
    return r;
  }

  std::int64_t ps_ = 0;
};

constexpr Time max(Time a, Time b) { return a < b ? b : a; }
constexpr Time min(Time a, Time b) { return a < b ? a : b; }

}  // namespace trainsim

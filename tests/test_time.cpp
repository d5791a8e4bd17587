#include <gtest/gtest.h>

#include <stdexcept>

#include "core/time.hpp"

using trainsim::Time;

TEST(Time, FactoriesAreExactPicoseconds) {
  EXPECT_EQ(Time::ps(7).count_ps(), 7);
  EXPECT_EQ(Time::ns(3).count_ps(), 3'000);
  EXPECT_EQ(Time::us(2).count_ps(), 2'000'000);
  EXPECT_EQ(Time::ms(5).count_ps(), 5'000'000'000);
  EXPECT_EQ(Time::zero().count_ps(), 0);
}

TEST(Time, FromSecondsRoundsToNearestPicosecond) {
  EXPECT_EQ(Time::from_seconds(1.5e-12).count_ps(), 2);
  EXPECT_EQ(Time::from_seconds(1.4e-12).count_ps(), 1);
  EXPECT_EQ(Time::from_seconds(13.75).count_ps(), 13'750'000'000'000);
  EXPECT_DOUBLE_EQ(Time::from_seconds(0.25).seconds(), 0.25);
}

TEST(Time, RejectsNegativeNanAndOutOfRange) {
  EXPECT_THROW((void)Time::from_seconds(-1.0), std::domain_error);
  EXPECT_THROW((void)Time::from_seconds(std::nan("")), std::domain_error);
  EXPECT_THROW((void)Time::from_seconds(1e8), std::overflow_error);  // > 106 days
}

TEST(Time, CheckedArithmetic) {
  EXPECT_EQ((Time::us(1) + Time::ns(5)).count_ps(), 1'005'000);
  EXPECT_EQ((Time::us(1) - Time::ns(5)).count_ps(), 995'000);
  EXPECT_EQ((Time::ns(3) * 4).count_ps(), 12'000);
  EXPECT_THROW((void)(Time::max() + Time::ps(1)), std::overflow_error);
  EXPECT_THROW((void)(Time::max() * 2), std::overflow_error);
  EXPECT_THROW((void)Time::ms(10'000'000'000), std::overflow_error);
}

TEST(Time, TotalOrder) {
  EXPECT_LT(Time::ns(1), Time::ns(2));
  EXPECT_EQ(Time::ns(1), Time::ps(1000));
  EXPECT_EQ(trainsim::max(Time::ns(1), Time::ns(2)), Time::ns(2));
  EXPECT_EQ(trainsim::min(Time::ns(1), Time::ns(2)), Time::ns(1));
}

// Reports of a simulated step: the text table, the JSON object of DESIGN.md and the
// Chrome trace-event file that Perfetto opens.
#pragma once

#include <cstddef>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include "workload/builder.hpp"
#include "workload/compare.hpp"

namespace trainsim::report {

/// Which op table a report adds (report::op_times): pipeline stage `stage`, at most `top`
/// rows (0: all).
struct OpsRequest {
  int stage = 0;
  std::size_t top = 0;
};

/// The JSON report (DESIGN.md "JSON report"), pretty-printed with 2-space indent, keys in a
/// fixed order so the same result gives byte-identical text. With `ops`, an "ops" object as
/// report::ops_json prints it is appended.
std::string to_json(const workload::Scenario& sc, const workload::StepResult& r,
                    std::optional<OpsRequest> ops = std::nullopt);

/// A human-readable table: step time, tokens/s, TFLOP/s per GPU, MFU, HFU, memory per GPU by
/// kind against capacity, bubble fraction and exposed communication by kind.
void print_table(std::ostream& os, const workload::Scenario& sc, const workload::StepResult& r);

/// The compare-schedules table: per schedule, step time, bubble fraction, peak activation
/// memory per stage, total memory and whether it fits, and throughput relative to 1F1B.
void print_comparison(std::ostream& os, const workload::Scenario& sc,
                      const std::vector<workload::ScheduleRun>& runs);

/// One op's share of a simulated rank's step: the tasks of one label and category.
struct OpTime {
  std::string op;          ///< task label ("mlp_fc1 wgrad", "tp all-gather", ...)
  Category category = Category::Compute;
  int count = 0;           ///< tasks that ran (partly) in the measured step
  Time busy;               ///< their time inside the measured step
};

/// The ops of pipeline stage `stage`'s simulated rank in its measured step
/// ([StageResult::window_begin, window_end], the window of the stage's breakdown), most busy
/// time first (ties by name): each task's
/// [start, end] clipped to the window, summed per (label, category). Compute and the
/// communication streams run concurrently, so communication busy time can overlap compute
/// and the rows add up to more than the step. Throws InputError when `stage` is not a
/// stage of the result.
std::vector<OpTime> op_times(const workload::StepResult& r, int stage);

/// The op table of `stage` (op_times), at most `top` rows (0: all), as text.
void print_ops(std::ostream& os, const workload::StepResult& r, int stage, std::size_t top);

/// The same as JSON: {"stage": s, "step_time_s": ..., "ops": [{"op", "category", "count",
/// "time_s", "share_of_step"}]}, at most `top` rows (0: all).
std::string ops_json(const workload::StepResult& r, int stage, std::size_t top);

/// Chrome trace-event JSON: a process per simulated rank (pipeline stage), a thread per
/// stream, one complete ("X") event per task with microsecond timestamps. When several steps
/// were simulated, two global instant ("i") events of category "step" mark the measured
/// step's window, which `otherData.measured_window_us` also holds.
std::string to_chrome_trace(const workload::Scenario& sc, const workload::StepResult& r);

}  // namespace trainsim::report

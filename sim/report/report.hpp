// Reports of a simulated step: the text table, the JSON object of DESIGN.md and the
// Chrome trace-event file that Perfetto opens.
#pragma once

#include <iosfwd>
#include <string>

#include "workload/builder.hpp"
#include "workload/compare.hpp"

namespace trainsim::report {

/// The JSON report (DESIGN.md "JSON report"), pretty-printed with 2-space indent, keys in a
/// fixed order so the same result gives byte-identical text.
std::string to_json(const workload::Scenario& sc, const workload::StepResult& r);

/// A human-readable table: step time, tokens/s, TFLOP/s per GPU, MFU, HFU, memory per GPU by
/// kind against capacity, bubble fraction and exposed communication by kind.
void print_table(std::ostream& os, const workload::Scenario& sc, const workload::StepResult& r);

/// The compare-schedules table: per schedule, step time, bubble fraction, peak activation
/// memory per stage, total memory and whether it fits, and throughput relative to 1F1B.
void print_comparison(std::ostream& os, const workload::Scenario& sc,
                      const std::vector<workload::ScheduleRun>& runs);

/// Chrome trace-event JSON: a process per simulated rank (pipeline stage), a thread per
/// stream, one complete ("X") event per task with microsecond timestamps.
std::string to_chrome_trace(const workload::Scenario& sc, const workload::StepResult& r);

}  // namespace trainsim::report

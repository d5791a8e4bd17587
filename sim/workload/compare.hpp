// Running one scenario under every pipeline schedule that its layout allows.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "workload/builder.hpp"

namespace trainsim::workload {

struct ScheduleRun {
  parallel::ScheduleKind schedule = parallel::ScheduleKind::OneFOneB;
  std::string name;       ///< "1f1b", "interleaved (v=2)", "zb-h2 (post-validation)", ...
  std::string skipped;    ///< why the schedule cannot run this scenario ("" when it ran)
  Scenario scenario;      ///< the scenario as run (schedule, virtual stages, steps changed)
  std::optional<StepResult> result;
};

/// Runs `base` under gpipe, 1f1b, interleaved (the scenario's virtual stages, or 2), zb-h1,
/// zb-h2 (with optimizer post-validation, steady state over 4 steps, as Qi et al. run it),
/// dualpipe, pipedream and 2bw (steady state over 4 steps). Schedules whose constraints the
/// scenario breaks are returned with the reason in `skipped`.
std::vector<ScheduleRun> compare_schedules(const Scenario& base);

}  // namespace trainsim::workload

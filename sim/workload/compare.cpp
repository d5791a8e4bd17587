#include "workload/compare.hpp"

#include "core/error.hpp"
#include "parallel/schedule.hpp"

namespace trainsim::workload {

std::vector<ScheduleRun> compare_schedules(const Scenario& base) {
  using parallel::ScheduleKind;
  std::vector<ScheduleRun> out;
  for (ScheduleKind k : {ScheduleKind::GPipe, ScheduleKind::OneFOneB, ScheduleKind::Interleaved,
                         ScheduleKind::ZbH1, ScheduleKind::ZbH2, ScheduleKind::DualPipe,
                         ScheduleKind::PipeDream, ScheduleKind::TwoBW}) {
    ScheduleRun run;
    run.schedule = k;
    run.scenario = base;
    auto& L = run.scenario.layout;
    L.schedule = k;
    L.virtual_stages = 1;
    L.optimizer_post_validation = false;
    run.scenario.steps = 1;
    run.name = std::string(parallel::schedule_name(k));
    if (k == ScheduleKind::Interleaved) {
      L.virtual_stages = base.layout.virtual_stages > 1 ? base.layout.virtual_stages : 2;
      run.name += " (v=" + std::to_string(L.virtual_stages) + ")";
    }
    if (k == ScheduleKind::ZbH2) {
      L.optimizer_post_validation = true;
      run.scenario.steps = 4;
      run.name += " (post-validation)";
    }
    if (!parallel::flushes(k)) {
      run.scenario.steps = parallel::kSteadyStateSteps;
      run.name += " (steady state)";
    }
    try {
      run.result = simulate_step(run.scenario);
    } catch (const InputError& e) {
      run.skipped = e.what();
    }
    out.push_back(std::move(run));
  }
  return out;
}

}  // namespace trainsim::workload

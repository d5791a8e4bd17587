// SVG pictures of simulated pipeline timelines, in the style of the GPipe and PipeDream
// figures: a row per pipeline stage, time across, one box per F / B / W pass with its
// microbatch number, a thin lane per stage with TP and DP collectives and the optimizer, and
// point-to-point transfers as lines between the rows. Several runs stack on one time axis.
#pragma once

#include <string>
#include <vector>

#include "workload/builder.hpp"

namespace trainsim::report {

struct SvgRun {
  std::string title;
  const workload::StepResult* result = nullptr;
};

/// A standalone SVG document. Boxes of class "op" are exactly the result's passes.
std::string pipeline_svg(const std::vector<SvgRun>& runs);

}  // namespace trainsim::report

// The figure of `meshtrain plot`: a legend of runs, a grid of line panels over the shared step
// axis (one per metric that some run logged) and, per MoE run, a heatmap of expert load.
#pragma once
#include <string>
#include <vector>

#include "tools/run_metrics.h"

namespace meshtrain::tools {

struct PlotRun {
  std::string label;  // the legend's name
  RunMetrics metrics;
};

enum class ImageFormat { Svg, Png };

// The image file's bytes; width in pixels, the height follows from the panels.
std::string render_figure(const std::vector<PlotRun>& runs, ImageFormat format, int width);

}  // namespace meshtrain::tools

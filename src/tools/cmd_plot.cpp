// meshtrain plot: training curves of one or more runs (their metrics.jsonl) in one SVG or PNG,
// runs overlaid in colour; MoE runs add a heatmap of expert load. Drawing needs cairo.
#include <filesystem>
#include <iostream>

#include "tools/commands.h"
#include "tools/flags.h"
#include "tools/plot_figure.h"
#include "tools/run_metrics.h"
#include "util/check.h"
#include "util/files.h"

namespace meshtrain::tools {
namespace fs = std::filesystem;
namespace {

// The format from the extension, so that the file opens as what it says it is.
ImageFormat format_of(const fs::path& file) {
  std::string ext = file.extension().string();
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (ext == ".svg") return ImageFormat::Svg;
  if (ext == ".png") return ImageFormat::Png;
  throw UsageError(str_cat("meshtrain plot: cannot tell the image format of '", file.string(),
                           "': the output must end in .svg or .png"));
}

// `-o FILE` as `--output FILE`, the short form being what plotting tools take.
Args with_long_output(Args args) {
  for (auto& a : args)
    if (a == "-o") a = "--output";
  return args;
}

}  // namespace

int run_plot(const Args& argv) {
  Flags flags("plot",
              {{"output", "the image to write, FILE.svg or FILE.png (also -o FILE)"},
               {"width", "the image's width in pixels (default 1200); the height follows from the panels"}},
              with_long_output(argv));
  if (flags.help_requested()) {
    std::cout << flags.usage("RUN_DIR... -o FILE.svg|png   (each RUN_DIR holds a metrics.jsonl)");
    return 0;
  }
  if (flags.positional().empty())
    throw UsageError("meshtrain plot: name at least one RUN_DIR (a train --output_dir holding metrics.jsonl)");
  const fs::path output = flags.require("output");
  const ImageFormat format = format_of(output);
  const int64_t width = flags.get_int("width", 1200);
  if (width < 400 || width > 10000)
    throw UsageError(str_cat("meshtrain plot: --width must be within 400..10000 pixels, got ", width));

  std::vector<fs::path> dirs(flags.positional().begin(), flags.positional().end());
  const auto labels = run_labels(dirs);
  std::vector<PlotRun> runs;
  for (size_t i = 0; i < dirs.size(); ++i) runs.push_back({labels[i], read_run_metrics(dirs[i])});
#if MESHTRAIN_HAVE_CAIRO
  util::write_file_atomic(output, render_figure(runs, format, static_cast<int>(width)));
  std::cerr << "wrote " << output.string() << " (" << runs.size() << (runs.size() == 1 ? " run" : " runs") << ")\n";
  return 0;
#else
  (void)format;
  fail("built without cairo; install libcairo2-dev and rebuild");
#endif
}

}  // namespace meshtrain::tools

// meshtrain plot: 1-2-5 and decade ticks, reading metrics.jsonl (bad lines named by number), run
// names, and the command end to end on two trained runs and a MoE log, to SVG and PNG, with one
// clear line for each mistake.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <fstream>
#include <random>
#include <regex>

#include "support/run_command.h"
#include "tools/axis_ticks.h"
#include "tools/run_metrics.h"
#include "util/check.h"

#if MESHTRAIN_HAVE_CAIRO
#include <cairo.h>
#endif

using namespace meshtrain::testing;
using namespace meshtrain::tools;
namespace fs = std::filesystem;

namespace {

// The step's mantissa: 1, 2 or 5.
int mantissa(double step) { return static_cast<int>(std::lround(step / std::pow(10.0, std::floor(std::log10(step) + 1e-9)))); }

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

int count_of(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

void write(const fs::path& file, const std::string& text) {
  fs::create_directories(file.parent_path());
  std::ofstream(file) << text;
}

}  // namespace

TEST(AxisTicks, LinearTicksStepByOneTwoFiveAndCoverTheRange) {
  auto t = linear_ticks(0, 1, 6);
  EXPECT_EQ(t.values, (std::vector<double>{0, 0.2, 0.4, 0.6, 0.8, 1}));
  t = linear_ticks(1, 30, 7);  // steps 1..30
  EXPECT_EQ(t.step, 5);
  EXPECT_EQ(t.lo, 0);
  EXPECT_EQ(t.hi, 30);
  t = linear_ticks(1.83, 5.52, 6);
  EXPECT_EQ(t.values, (std::vector<double>{1, 2, 3, 4, 5, 6}));
  t = linear_ticks(0.0003, 0.0029, 6);  // 0.0005 would need 7 ticks
  EXPECT_EQ(t.values, (std::vector<double>{0, 0.001, 0.002, 0.003}));
  t = linear_ticks(-7, 12, 6);
  EXPECT_EQ(t.values, (std::vector<double>{-10, -5, 0, 5, 10, 15}));
  t = linear_ticks(0.1, 0.3, 3);  // 0.1 × 3 is not 0.3 in binary: the tick is exact all the same
  EXPECT_EQ(t.values, (std::vector<double>{0.1, 0.2, 0.3}));
  t = linear_ticks(3, 3);  // one value: widened around it
  EXPECT_LT(t.lo, 3);
  EXPECT_GT(t.hi, 3);

  // Any range: a 1-2-5 step, at most max ticks covering it, and the next smaller step needs more.
  std::mt19937 gen(7);
  std::uniform_real_distribution<double> exponent(-6, 6), unit(0, 1);
  for (int i = 0; i < 2000; ++i) {
    const double scale = std::pow(10.0, exponent(gen));
    const double a = (unit(gen) - 0.3) * scale, b = a + unit(gen) * scale;
    const int max_ticks = 3 + i % 6;
    t = linear_ticks(a, b, max_ticks);
    SCOPED_TRACE(::testing::Message() << "[" << a << ", " << b << "] max " << max_ticks << " step " << t.step);
    EXPECT_TRUE(mantissa(t.step) == 1 || mantissa(t.step) == 2 || mantissa(t.step) == 5);
    ASSERT_LE(static_cast<int>(t.values.size()), max_ticks);
    EXPECT_LE(t.lo, a + 1e-9 * t.step);
    EXPECT_GE(t.hi, b - 1e-9 * t.step);
    const int m = mantissa(t.step);
    const double smaller = m == 1 ? t.step / 2 : m == 2 ? t.step / 2 : t.step * 0.4;
    EXPECT_GT(std::ceil(b / smaller - 1e-9) - std::floor(a / smaller + 1e-9) + 1, max_ticks);
  }
}

TEST(AxisTicks, LogTicksAreDecadesWithMinorTicksBetween) {
  auto t = log_ticks(0.05, 80);
  EXPECT_TRUE(t.log);
  ASSERT_EQ(t.values.size(), 5u);
  const double decades[] = {0.01, 0.1, 1, 10, 100};
  for (size_t i = 0; i < 5; ++i) EXPECT_DOUBLE_EQ(t.values[i], decades[i]);
  EXPECT_EQ(t.minor.size(), 4u * 8u);  // 2..9 in each of the 4 decades
  EXPECT_DOUBLE_EQ(t.minor.front(), 0.02);
  t = log_ticks(1e-6, 1e6, 7);  // 13 decades: every second one
  EXPECT_EQ(t.values.size(), 7u);
  EXPECT_EQ(t.step, 2);
  EXPECT_TRUE(t.minor.empty());
  t = log_ticks(10, 10);
  EXPECT_EQ(t.values.size(), 2u);
  EXPECT_THROW(log_ticks(0, 10), meshtrain::Error);
}

TEST(AxisTicks, LogScaleOnlyForPositiveValuesSpanningMoreThanAFactorOfTen) {
  EXPECT_TRUE(wants_log_scale({1, 50, NAN}));
  EXPECT_FALSE(wants_log_scale({1, 5}));
  EXPECT_FALSE(wants_log_scale({0, 100}));
  EXPECT_FALSE(wants_log_scale({-1, 100}));
  EXPECT_FALSE(wants_log_scale({NAN}));
}

TEST(AxisTicks, LabelsUseTheDigitsTheStepNeeds) {
  auto t = linear_ticks(0, 1, 6);
  EXPECT_EQ(tick_label(0.6, t), "0.6");
  EXPECT_EQ(tick_label(0, t), "0");
  t = linear_ticks(0.1, 0.3, 3);
  EXPECT_EQ(tick_label(t.values[2], t), "0.3");
  t = linear_ticks(0, 0.003, 4);
  EXPECT_EQ(tick_label(t.values[1], t), "0.001");
  t = linear_ticks(5000, 10000, 6);
  EXPECT_EQ(tick_label(t.values.back(), t), "10k");
  EXPECT_EQ(tick_label(7000, t), "7k");
  t = linear_ticks(1e-4, 2e-4, 3);
  EXPECT_EQ(tick_label(1.5e-4, t), "1.5e-4");
  auto l = log_ticks(1e-5, 1000);
  EXPECT_EQ(tick_label(1e-5, l), "1e-5");
  EXPECT_EQ(tick_label(0.01, l), "0.01");
  EXPECT_EQ(tick_label(1000, l), "1000");
}

class RunMetricsFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("mt_plot_metrics_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(RunMetricsFile, ColumnsPerKeyNaNWhereAbsentLastRowOfAStepWins) {
  write(dir_ / "run/metrics.jsonl",
        "{\"step\": 1, \"loss\": 5.0, \"lr\": 0.001, \"bytes_sent_per_step\": {\"dp\": 10}}\n"
        "{\"step\": 2, \"loss\": null, \"lr\": 0.002, \"eval_loss\": 4.5}\n"
        "{\"step\": 3, \"loss\": 4.0, \"lr\": 0.003}\n"
        "\n"
        "{\"step\": 3, \"loss\": 3.5, \"lr\": 0.003}\n");  // a restart logs step 3 again
  const auto m = read_run_metrics(dir_ / "run");
  EXPECT_EQ(m.step, (std::vector<double>{1, 2, 3}));
  const auto& loss = m.values("loss");
  ASSERT_EQ(loss.size(), 3u);
  EXPECT_EQ(loss[0], 5.0);
  EXPECT_TRUE(std::isnan(loss[1]));
  EXPECT_EQ(loss[2], 3.5);
  EXPECT_TRUE(m.has("eval_loss"));
  EXPECT_TRUE(std::isnan(m.values("eval_loss")[0]));
  EXPECT_FALSE(m.has("peak_memory_mib"));
  EXPECT_TRUE(m.values("peak_memory_mib").empty());
  EXPECT_FALSE(m.series.contains("bytes_sent_per_step"));
  EXPECT_FALSE(m.has_moe_routing());
}

TEST_F(RunMetricsFile, RoutingCountsPerLayerAndExpert) {
  write(dir_ / "moe/metrics.jsonl",
        "{\"step\": 1, \"loss\": 5, \"tokens_per_expert\": [[1, 2, 3], [4, 5, 6]]}\n"
        "{\"step\": 2, \"loss\": 4}\n");
  const auto m = read_run_metrics(dir_ / "moe");
  ASSERT_TRUE(m.has_moe_routing());
  EXPECT_EQ(m.tokens_per_expert[0], (std::vector<std::vector<double>>{{1, 2, 3}, {4, 5, 6}}));
  EXPECT_TRUE(m.tokens_per_expert[1].empty());
}

TEST_F(RunMetricsFile, ABadLineIsNamedByFileAndNumber) {
  const auto file = (dir_ / "run/metrics.jsonl").string();
  auto error_for = [&](const std::string& text) {
    write(dir_ / "run/metrics.jsonl", text);
    return message_of([&] { read_run_metrics(dir_ / "run"); });
  };
  const std::string good = "{\"step\": 1, \"loss\": 5}\n";
  EXPECT_NE(error_for(good + good + "{\"step\": 3, \"loss\": 5\n").find(file + ":3: not valid JSON"), std::string::npos);
  EXPECT_NE(error_for(good + "[1, 2]\n").find(file + ":2: expected a JSON object"), std::string::npos);
  EXPECT_NE(error_for(good + "{\"loss\": 5}\n").find(file + ":2: no numeric \"step\""), std::string::npos);
  EXPECT_NE(error_for(good + "\n{\"step\": 2, \"loss\": \"low\"}\n").find(file + ":3: \"loss\" should be a number"),
            std::string::npos);
  EXPECT_NE(error_for("{\"step\": 1, \"tokens_per_expert\": [[1, 2], [3]]}\n").find(file + ":1: tokens_per_expert has 2 experts"),
            std::string::npos);
  EXPECT_NE(error_for("{\"step\": 1, \"tokens_per_expert\": [1, 2]}\n").find(file + ":1: tokens_per_expert must be a list"),
            std::string::npos);
  EXPECT_NE(error_for(good + "{\"step\": 2, \"tokens_per_expert\": [[1, 2]]}\n{\"step\": 3, \"tokens_per_expert\": [[1, 2, 3]]}\n")
                .find(file + ": tokens_per_expert changes shape at step 3"),
            std::string::npos);
  EXPECT_NE(error_for("").find(file + ": no logged steps"), std::string::npos);
  fs::remove(file);
  EXPECT_NE(message_of([&] { read_run_metrics(dir_ / "run"); }).find(file + ": cannot be read"), std::string::npos);
  EXPECT_NE(message_of([&] { read_run_metrics(dir_ / "nowhere"); }).find("nowhere: no such run directory"),
            std::string::npos);
}

TEST(RunLabels, DirectoryNamesWithParentsOnlyWhereNamesCollide) {
  EXPECT_EQ(run_labels({"/r/a/x/run", "/r/b/x/run", "/r/other/"}), (std::vector<std::string>{"a/x/run", "b/x/run", "other"}));
  EXPECT_EQ(run_labels({"/r/ddp", "/r/fsdp"}), (std::vector<std::string>{"ddp", "fsdp"}));
  EXPECT_EQ(run_labels({"/r/run", "/r/run"}), (std::vector<std::string>{"r/run", "r/run"}));  // the same run twice
}

// The command on real runs: two llama-tiny trainings (different learning rates) logged every step,
// and a MoE log with routing counts.
class Plot : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("mt_plot_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "moe");
    std::ofstream log(dir_ / "moe/metrics.jsonl");
    // A gap in the loss (null at step 3) and a sparse eval_loss: broken and dashed lines.
    for (int s = 1; s <= 6; ++s)
      log << "{\"step\": " << s << ", \"loss\": " << (s == 3 ? "null" : std::to_string(5.0 - 0.2 * s))
          << (s % 3 == 0 ? ", \"eval_loss\": 4.5" : "") << ", \"lr\": 0.001, \"grad_norm\": 1.5"
          << ", \"tokens_per_s\": 3000, \"aux_loss\": 2.01, \"tokens_per_expert\": [[10, 20, 30, 40], [40, 30, 20, "
          << 10 * s << "]]}\n";
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  // The two trained runs, trained by the first test that asks.
  static std::string runs() {
    static const bool trained = [] {
      for (const char* lr : {"3e-3", "1e-3"}) {
        const auto r = run_command(kBin + " train --config_name " + kSource + "/configs/llama-tiny/config.json --data " +
                                   kSource + "/data/corpus.txt --seq_len 32 --per_device_train_batch_size 2 "
                                   "--max_steps 6 --logging_steps 1 --save_steps 0 --learning_rate " + lr +
                                   " --output_dir " + (dir_ / ("lr" + std::string(lr))).string());
        if (r.exit_code != 0) ADD_FAILURE() << r.err;
      }
      return true;
    }();
    (void)trained;
    return (dir_ / "lr3e-3").string() + " " + (dir_ / "lr1e-3").string();
  }
  static fs::path dir_;
};
fs::path Plot::dir_;

void expect_one_line_error(const std::string& args, int code, const std::string& phrase) {
  auto r = run_command(kBin + " plot " + args);
  EXPECT_EQ(r.exit_code, code) << args << "\n" << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find(phrase), std::string::npos) << r.err;
}

TEST_F(Plot, MistakesAreOneLineAndWriteNothing) {
  const auto out = (dir_ / "bad.png").string(), good = (dir_ / "moe").string();
  expect_one_line_error("-o " + out, 2, "name at least one RUN_DIR");
  expect_one_line_error(good, 2, "--output is required");
  expect_one_line_error(good + " -o " + (dir_ / "bad.jpg").string(), 2, "must end in .svg or .png");
  expect_one_line_error(good + " -o " + out + " --width 10", 2, "--width must be within 400..10000");
  fs::create_directories(dir_ / "empty");
  expect_one_line_error(good + " " + (dir_ / "empty").string() + " -o " + out, 1,
                        (dir_ / "empty/metrics.jsonl").string() + ": cannot be read");
  expect_one_line_error((dir_ / "missing").string() + " -o " + out, 1, "missing: no such run directory");
  write(dir_ / "broken/metrics.jsonl", "{\"step\": 1, \"loss\": 5}\n{\"step\": 2, \"loss\": 4.\n");
  expect_one_line_error((dir_ / "broken").string() + " -o " + out, 1, "broken/metrics.jsonl:2: not valid JSON");
  EXPECT_FALSE(fs::exists(out));
  EXPECT_FALSE(fs::exists(dir_ / "bad.jpg"));
}

#if MESHTRAIN_HAVE_CAIRO

// Okabe-Ito's first two colours as cairo's SVG writes them (tools/chart.cpp's palette).
const std::string kFirstRun = "stroke:rgb(0%,44.7%,69.8%)", kSecondRun = "stroke:rgb(83.5%,36.9%,0%)";

TEST_F(Plot, SvgHasALineOfEachRunInEachPanelAndTheTextAsGlyphs) {
  const auto out = dir_ / "runs.svg";
  auto r = run_command(kBin + " plot " + runs() + " -o " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string svg = slurp(out);
  EXPECT_TRUE(svg.starts_with("<?xml")) << svg.substr(0, 100);
  EXPECT_NE(svg.find("width=\"1200px\""), std::string::npos);
  EXPECT_TRUE(svg.ends_with("</svg>\n")) << svg.substr(svg.size() - 100);
  // Well-formed XML, as a browser needs it.
  auto xml = run_command(kPython + " -c \"import sys, xml.etree.ElementTree as E; "
                         "print(sum(1 for e in E.parse(sys.argv[1]).iter() if e.tag.endswith('}path')))\" " + out.string());
  ASSERT_EQ(xml.exit_code, 0) << xml.err;
  EXPECT_EQ(std::stoi(xml.out), count_of(svg, "<path "));
  // A stroked line per run in each panel (loss, learning rate, grad norm, tokens/s, and peak memory
  // where train logs it), and its legend swatch.
  int panels = 0;
  const auto logged = metrics_of(dir_ / "lr3e-3");
  ASSERT_EQ(logged.size(), 6u);
  for (const char* key : {"loss", "lr", "grad_norm", "tokens_per_s", "peak_memory_mib"}) panels += logged[0].contains(key);
  EXPECT_GE(panels, 4);
  const std::regex stroke("<path style=\"fill:none;[^\"]*(stroke:rgb\\([^)]*\\))");
  std::map<std::string, int> lines;
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), stroke); it != std::sregex_iterator(); ++it)
    ++lines[(*it)[1].str()];
  EXPECT_EQ(lines[kFirstRun], panels + 1);
  EXPECT_EQ(lines[kSecondRun], panels + 1);
  // cairo writes text as glyph outlines: at least one per letter of the titles and run names.
  const std::string words = "LossLearningrateGradientnormThroughputlr3e-3lr1e-3stepstep";
  EXPECT_GE(count_of(svg, "<use xlink:href=\"#glyph"), static_cast<int>(words.size()));
  EXPECT_NE(r.err.find("wrote " + out.string() + " (2 runs)"), std::string::npos) << r.err;
}

// A PNG's size from its IHDR chunk, after checking the signature.
std::pair<int, int> png_size(const std::string& png) {
  const std::string signature = "\x89PNG\r\n\x1a\n";
  EXPECT_EQ(png.substr(0, 8), signature);
  EXPECT_EQ(png.substr(12, 4), "IHDR");
  auto be32 = [&](size_t at) {
    return (uint8_t(png[at]) << 24) | (uint8_t(png[at + 1]) << 16) | (uint8_t(png[at + 2]) << 8) | uint8_t(png[at + 3]);
  };
  return {static_cast<int>(be32(16)), static_cast<int>(be32(20))};
}

// Pixels within 0.1 per channel of rgb, and pixels that are not white.
std::pair<int, int> pixels_like(const fs::path& png, double r, double g, double b) {
  cairo_surface_t* s = cairo_image_surface_create_from_png(png.c_str());
  EXPECT_EQ(cairo_surface_status(s), CAIRO_STATUS_SUCCESS);
  const int w = cairo_image_surface_get_width(s), h = cairo_image_surface_get_height(s);
  const int stride = cairo_image_surface_get_stride(s);
  const unsigned char* data = cairo_image_surface_get_data(s);
  int like = 0, ink = 0;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const uint32_t p = *reinterpret_cast<const uint32_t*>(data + y * stride + 4 * x);
      const double pr = ((p >> 16) & 255) / 255.0, pg = ((p >> 8) & 255) / 255.0, pb = (p & 255) / 255.0;
      like += std::abs(pr - r) < 0.1 && std::abs(pg - g) < 0.1 && std::abs(pb - b) < 0.1;
      ink += (p & 0xffffff) != 0xffffff;
    }
  cairo_surface_destroy(s);
  return {like, ink};
}

TEST_F(Plot, PngOfTheWidthAskedWithBothRunsDrawn) {
  const auto out = dir_ / "runs.png";
  auto r = run_command(kBin + " plot " + runs() + " -o " + out.string() + " --width 900");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto [w, h] = png_size(slurp(out));
  EXPECT_EQ(w, 900);
  EXPECT_GT(h, 400);
  EXPECT_LT(h, 2000);
  const auto [blue, ink] = pixels_like(out, 0.0, 0.447, 0.698);
  const auto [vermillion, _] = pixels_like(out, 0.835, 0.369, 0.0);
  EXPECT_GT(ink, w * h / 50) << "blank";
  EXPECT_GT(blue, 500);  // four panels of lines and a swatch
  EXPECT_GT(vermillion, 500);
}

TEST_F(Plot, MoeRunsAddAnExpertLoadHeatmap) {
  const auto svg = dir_ / "moe.svg", png = dir_ / "moe.png", plain = dir_ / "plain.png";
  ASSERT_EQ(run_command(kBin + " plot " + (dir_ / "moe").string() + " -o " + svg.string()).exit_code, 0);
  ASSERT_EQ(run_command(kBin + " plot " + (dir_ / "moe").string() + " -o " + png.string()).exit_code, 0);
  // The same log without routing counts: the heatmap is the difference.
  write(dir_ / "plain/metrics.jsonl", std::regex_replace(slurp(dir_ / "moe/metrics.jsonl"),
                                                        std::regex(", \"tokens_per_expert\": [^}]*"), ""));
  auto r = run_command(kBin + " plot " + (dir_ / "plain").string() + " -o " + plain.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_GT(png_size(slurp(png)).second, png_size(slurp(plain)).second + 150);
  // One filled cell per (interval, layer, expert): 6 × 2 × 4, beyond the plain figure's fills.
  const std::string text = slurp(svg);
  EXPECT_GE(count_of(text, "stroke:none;fill-rule:nonzero;fill:rgb("), 48);
  // Yellow, the top of viridis, for the largest share: layer 0's last expert (40 of 100 tokens).
  EXPECT_GT(pixels_like(png, 0.99, 0.906, 0.145).first, 100);
}

#else

TEST_F(Plot, WithoutCairoPlotSaysHowToGetIt) {
  expect_one_line_error((dir_ / "moe").string() + " -o " + (dir_ / "runs.png").string(), 1,
                        "built without cairo; install libcairo2-dev and rebuild");
}

#endif

// The meshtrain sub-commands; each takes the arguments after its name and returns the exit code.
#pragma once
#include <string>
#include <vector>

namespace meshtrain::tools {

using Args = std::vector<std::string>;

int run_train(const Args& args);
int run_eval(const Args& args);
int run_generate(const Args& args);
int run_info(const Args& args);
int run_launch(const Args& args);
int run_plan(const Args& args);
int run_verify(const Args& args);
int run_plot(const Args& args);
int run_tokenize(const Args& args);

}  // namespace meshtrain::tools

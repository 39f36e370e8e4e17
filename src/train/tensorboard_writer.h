// A TensorBoard event file written natively, without protobuf or TensorFlow: TFRecord framing
// around hand-encoded tensorflow.Event messages (scalars as Summary.Value.simple_value). Each
// record goes to the file whole as it is added, so a crashed run keeps the events it logged.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "util/files.h"

namespace meshtrain::train {

class TensorBoardWriter {
 public:
  // Creates dir and a new events.out.tfevents.<unix seconds>.<hostname> in it (".N" appended
  // when a run started in the same second), whose first record names the format (brain.Event:2).
  explicit TensorBoardWriter(const std::filesystem::path& dir);
  const std::filesystem::path& path() const { return path_; }

  // One event at `step` holding these (tag, value) scalars, stored as float32.
  void add_scalars(int64_t step, const std::vector<std::pair<std::string, double>>& scalars);
  // A SessionLog START at `step`: TensorBoard drops what earlier files logged at steps >= step,
  // as it does for a TensorFlow job restarted from a checkpoint.
  void add_session_start(int64_t step);

 private:
  void add_event(std::string_view fields);

  std::filesystem::path path_;
  util::AppendFile out_;
};

// A TFRecord: uint64 length, masked CRC-32C of the length, the data, masked CRC-32C of the data
// (little endian).
std::string tfrecord(std::string_view data);

}  // namespace meshtrain::train

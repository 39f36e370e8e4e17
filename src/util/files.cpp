#include "util/files.h"

#include <fcntl.h>
#include <unistd.h>

#include <fstream>

#include "util/check.h"

namespace meshtrain::util {

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  MT_CHECK(in, "cannot open ", path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

void sync_path(const std::filesystem::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  MT_CHECK(fd >= 0, "cannot open ", path, " to sync it");
  ::fsync(fd);
  ::close(fd);
}

void write_file_atomic(const std::filesystem::path& path, std::string_view content) {
  auto tmp = path;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    MT_CHECK(out, "cannot write ", tmp);
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    out.flush();
    MT_CHECK(out, "write failed: ", tmp);
  }
  sync_path(tmp);
  std::filesystem::rename(tmp, path);
}

}  // namespace meshtrain::util

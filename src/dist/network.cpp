#include "dist/network.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <thread>

#include "util/check.h"
#include "util/files.h"

namespace meshtrain::dist {

namespace {

struct AddrInfo {
  addrinfo* list = nullptr;
  ~AddrInfo() {
    if (list) ::freeaddrinfo(list);
  }
};

// The first address `host` resolves to, as a socket address with `port`.
AddrInfo resolve(const std::string& host, int port, int socktype) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = socktype;
  AddrInfo info;
  const int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &info.list);
  MT_CHECK(rc == 0 && info.list, "cannot resolve '", host, "': ", ::gai_strerror(rc));
  return info;
}

}  // namespace

bool is_loopback(const std::string& addr) {
  return addr.starts_with("127.") || addr == "localhost" || addr == "::1";
}

std::string local_address_toward(const std::string& remote) {
  try {
    AddrInfo info = resolve(remote, 9, SOCK_DGRAM);  // a UDP "connect" sends nothing; it picks a route
    const int fd = ::socket(info.list->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return "";
    sockaddr_storage local{};
    socklen_t len = sizeof local;
    const bool ok = ::connect(fd, info.list->ai_addr, info.list->ai_addrlen) == 0 &&
                    ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0;
    ::close(fd);
    if (!ok) return "";
    char text[INET6_ADDRSTRLEN] = {};
    const void* addr = local.ss_family == AF_INET
                           ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(&local)->sin_addr)
                           : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(&local)->sin6_addr);
    return ::inet_ntop(local.ss_family, addr, text, sizeof text) ? text : "";
  } catch (const Error&) {
    return "";
  }
}

std::vector<std::shared_ptr<gloo::transport::Device>> gloo_devices(const std::string& master_addr) {
  using c10d::ProcessGroupGloo;
  std::vector<std::shared_ptr<gloo::transport::Device>> devices;
  if (const char* names = std::getenv("GLOO_SOCKET_IFNAME"); names && *names) {
    std::stringstream list(names);
    for (std::string name; std::getline(list, name, ',');) {
      try {
        devices.push_back(ProcessGroupGloo::createDeviceForInterface(name));
      } catch (const std::exception& e) {
        fail("GLOO_SOCKET_IFNAME: cannot use interface '", name, "': ", e.what());
      }
    }
    return devices;
  }
  if (is_loopback(master_addr)) return {ProcessGroupGloo::createDeviceForHostname("127.0.0.1")};
  const auto local = local_address_toward(master_addr);
  if (!local.empty() && !is_loopback(local)) return {ProcessGroupGloo::createDeviceForHostname(local)};
  return {ProcessGroupGloo::createDefaultDevice()};
}

void wait_for_listener(const std::string& addr, int port, std::chrono::steady_clock::time_point deadline,
                       std::chrono::milliseconds timeout) {
  std::string last = "no attempt";
  do {
    AddrInfo info = resolve(addr, port, SOCK_STREAM);
    const int fd = ::socket(info.list->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    MT_CHECK(fd >= 0, "cannot create a socket: ", util::errno_message(errno));
    int err = ::connect(fd, info.list->ai_addr, info.list->ai_addrlen) == 0 ? 0 : errno;
    if (err == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      err = ETIMEDOUT;
      if (::poll(&p, 1, static_cast<int>(std::clamp<int64_t>(left.count(), 0, 1000))) == 1) {
        socklen_t len = sizeof err;
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      }
    }
    ::close(fd);
    if (err == 0) return;
    last = util::errno_message(err);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  } while (std::chrono::steady_clock::now() < deadline);
  fail("nothing listens on ", addr, ":", port, " after ", timeout.count() / 1000.0, " s (last attempt: ", last,
       "): is rank 0's node started, and is MASTER_ADDR an address of its host?");
}

int listen_on(const std::string& addr, int port) {
  AddrInfo info = resolve(addr, port, SOCK_STREAM);
  const int fd = ::socket(info.list->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  MT_CHECK(fd >= 0, "cannot create a socket: ", util::errno_message(errno));
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, info.list->ai_addr, info.list->ai_addrlen) != 0 || ::listen(fd, 2048) != 0) {
    const int err = errno;
    ::close(fd);
    fail("cannot listen on ", addr, ":", port, " for the rendezvous store: ", util::errno_message(err),
         err == EADDRNOTAVAIL ? " (MASTER_ADDR must be an address of rank 0's host)" : "");
  }
  return fd;
}

}  // namespace meshtrain::dist

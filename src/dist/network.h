// Which network interfaces the ranks use: Gloo binds the interfaces in GLOO_SOCKET_IFNAME
// (comma-separated, as torch.distributed reads it), else loopback for a loopback master, else the
// address this host routes MASTER_ADDR through; the rendezvous store listens on MASTER_ADDR only.
#pragma once
#include <gloo/transport/device.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace meshtrain::dist {

bool is_loopback(const std::string& addr);

// The local IP address the kernel would send packets to `remote` from; empty when it has no route.
std::string local_address_toward(const std::string& remote);

std::vector<std::shared_ptr<gloo::transport::Device>> gloo_devices(const std::string& master_addr);

// Waits until addr:port accepts a TCP connection, retrying every 100 ms until the deadline; throws
// naming the time-out it came from and the last error (the store's own client retries past it).
void wait_for_listener(const std::string& addr, int port, std::chrono::steady_clock::time_point deadline,
                       std::chrono::milliseconds timeout);

// A listening TCP socket bound to addr:port (close-on-exec), for the store to take over; throws
// naming the address and errno (EADDRINUSE, EADDRNOTAVAIL: not an address of this host).
int listen_on(const std::string& addr, int port);

}  // namespace meshtrain::dist

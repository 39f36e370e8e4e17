// Packed documents under sequence sharding: ring attention (cp 2 to 4, both K/V strategies),
// Ulysses (sp 2) and Ulysses around the ring (cp 2 × sp 2) against each document attended on
// its own on the full sequence (outputs, lse, dQ/dK/dV), with documents that span chunks,
// start inside them and end on their edges; and the ring skipping blocks no document reaches.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "parallel/context_parallel.h"
#include "parallel/ulysses.h"
#include "support/attention_reference.h"
#include "support/run_ranks.h"
#include "support/sharded_core_check.h"

using namespace meshtrain;
using namespace meshtrain::testing;

namespace {

// 96 tokens per row: chunks of 12 (cp 4) or 24 (cp 2) are crossed, started and ended on.
at::Tensor packed_rows() { return documents_of_lengths({{30, 1, 17, 40, 8}, {5, 91}, {12, 12, 24, 48}, {96}}); }

}  // namespace

TEST(DocumentRingAttention, EqualsEachDocumentOnItsOwn) {
  const auto docs = packed_rows();
  const auto ref = serial_document_attention(4, 4, 2, 96, 12, 5, docs);
  for (int64_t cp : {2, 3, 4}) {
    for (auto strategy : {parallel::CpCommStrategy::Ring, parallel::CpCommStrategy::AllGather}) {
      SCOPED_TRACE(::testing::Message() << "cp " << cp << " " << parallel::cp_comm_strategy_name(strategy));
      run_ranks(sizes(1, 1, cp), [&](std::shared_ptr<dist::DeviceMesh> mesh) {
        parallel::RingAttention core(mesh->group(MeshDim::Cp), strategy);
        check_core(core, ref, *mesh, docs);
      });
    }
  }
}

TEST(DocumentUlysses, AloneAndAroundTheRingEqualEachDocumentOnItsOwn) {
  const auto docs = packed_rows();
  const auto ref = serial_document_attention(4, 4, 2, 96, 12, 6, docs);
  run_ranks(sizes(1, 1, 1, 2), [&](std::shared_ptr<dist::DeviceMesh> mesh) {
    parallel::UlyssesAttention core(mesh->group(MeshDim::Sp));
    check_core(core, ref, *mesh, docs);
  });
  run_ranks(sizes(1, 1, 2, 2), [&](std::shared_ptr<dist::DeviceMesh> mesh) {
    parallel::UlyssesAttention core(mesh->group(MeshDim::Sp),
                                    std::make_shared<parallel::RingAttention>(mesh->group(MeshDim::Cp)));
    check_core(core, ref, *mesh, docs);
  });
}

TEST(DocumentRingAttention, DocumentsOnChunkEdgesSkipEveryOffDiagonalBlock) {
  // No document crosses a chunk: each rank computes its own chunks only, yet every rank still
  // takes part in the ring's exchanges (forward and backward), so nothing deadlocks.
  const auto docs = documents_of_lengths({{24, 24, 24, 24}});
  const auto ref = serial_document_attention(1, 4, 2, 96, 12, 7, docs);
  run_ranks(sizes(1, 1, 2), [&](std::shared_ptr<dist::DeviceMesh> mesh) {
    parallel::RingAttention core(mesh->group(MeshDim::Cp), parallel::CpCommStrategy::Ring);
    check_core(core, ref, *mesh, docs);
  });
}

TEST(DocumentRingAttention, DocumentIdsMustCoverTheWholeSequence) {
  run_ranks(sizes(1, 1, 2), [&](std::shared_ptr<dist::DeviceMesh> mesh) {
    parallel::RingAttention core(mesh->group(MeshDim::Cp));
    auto q = at::randn({1, 2, 8, 4});
    expect_error([&] { core.forward(q, q, q, 0.5, documents_of_lengths({{3, 5}})); },
                 "do not cover 1 rows of 16 tokens");
  });
}

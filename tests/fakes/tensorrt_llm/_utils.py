"""mpi_rank() / mpi_world_size() of tensorrt_llm/_utils.py (index file id 52995752, the 1.x version):
mpi_comm().Get_rank() / Get_size() when built with multi-device support, else 0 / 1 (torch.distributed's
rank when TLLM_DISABLE_MPI=1). The fake has no MPI: tests set MPI_RANK / MPI_WORLD_SIZE here."""

MPI_RANK = 0
MPI_WORLD_SIZE = 1


def mpi_rank() -> int:
    return MPI_RANK


def mpi_world_size() -> int:
    return MPI_WORLD_SIZE

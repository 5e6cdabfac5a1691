"""What the processes of one launch (accelerate's) decide together."""
from .errors import UserError


def decided_by_main(accelerator, decide, error_type=UserError):
    """`decide()` on the main process alone (a check that reads a folder and writes into it: no other process
    sees it half-made); its refusal, a UserError, is raised as `error_type` on every process, so all stop alike
    with its one line and none is left at a barrier for a process gone. Returns what `decide` returned on the
    main process, None on the others; no process goes on before the main one has decided."""
    decision, refusal = None, [None]
    if accelerator.is_main_process:
        try:
            decision = decide()
        except UserError as error:
            refusal = [str(error)]
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(refusal)  # collective: the others wait here for the main process's verdict
    if refusal[0] is not None:
        raise error_type(refusal[0])
    return decision

"""What runs on or asks a cluster scheduler: SLURM job arrays through submitit (the search
workers' jobs in ``slurm``, the final trainings' in ``retrain_job``, what both do around
their work in ``submitit_task``, the launcher's wait in ``slurm_wait``, the queue reader
``squeue``) and the Kubernetes Indexed Job manifest (``k8s``). The commands that use them
are in ``launch.commands``."""

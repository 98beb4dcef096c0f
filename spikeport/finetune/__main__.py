"""`python -m spikeport.finetune ...` is `spikeport finetune ...` (handy under torchrun -m)."""

from spikeport.cli.main import main

if __name__ == "__main__":
    main(["finetune", *__import__("sys").argv[1:]], prog_name="spikeport finetune")

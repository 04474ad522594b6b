"""The bench's job function in a module, so that workers import it instead of receiving it."""

import khadem_nb as kn

names = kn.Queue()  # holds the job's name in this process's registry; never opened


@names.job(name="shipjobs.square")
def square(x: int) -> int:
    return x * x

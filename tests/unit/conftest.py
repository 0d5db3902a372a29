"""The fake kernel's fixtures, for every unit test that asks for them by name."""

import fakekit

no_real_kernel = fakekit.no_real_kernel
lab = fakekit.lab

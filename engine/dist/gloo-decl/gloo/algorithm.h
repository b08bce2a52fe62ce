// Stand-in for a gloo header the wheel's ProcessGroupGloo.hpp includes: nothing of it is used
// (see README.md beside it).
#pragma once

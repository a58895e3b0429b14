/* placeholder: being written */
#include "tg_types.h"

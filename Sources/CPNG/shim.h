// Only libpng's simplified png_image_* API is used: it reports errors instead of longjmp-ing.
#include <png.h>

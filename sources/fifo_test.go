package sources

import "time"

// hostileBound is how long a test waits for what a hostile file must not block.
const hostileBound = 30 * time.Second

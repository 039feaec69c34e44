/* forking: a workload whose work happens in the processes it starts. The parent forks two
 * workers that spin in `child_work` for the given seconds, and only waits for them itself. */
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) unsigned long long child_work(double seconds)
{
    unsigned long long x = 1;
    double end = now() + seconds;
    while (now() < end)
        for (int i = 0; i < 100000; i++)
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    return x;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 5;
    for (int k = 0; k < 2; k++)
        if (fork() == 0)
            return (int)(child_work(seconds) & 1);
    while (wait(NULL) > 0)
        ;
    return 0;
}

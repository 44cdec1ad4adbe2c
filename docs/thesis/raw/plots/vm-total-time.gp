$d0 << EOD
1.7 4.045
2.7 4.167
3.7 1.248
4.7 1.253
EOD
$d1 << EOD
-0.1 9.237
0.9 9.235
1.9 3.82
2.9 3.758
3.9 1.26
4.9 1.309
EOD
$d2 << EOD
0.1 9.657
1.1 10.686
2.1 4.594
3.1 6.13
4.1 2.187
5.1 3.9
EOD
$d3 << EOD
0.30000000000000004 9.122
1.3 10.245
2.3 4.126
3.3 5.81
4.3 2.025
5.3 3.825
EOD
set terminal pngcairo noenhanced size 900,640 font 'DejaVu Sans,10'
set output '/work/wt-thesis/docs/thesis/img/vm-total-time.png'
set title "VM migration total time, ferry vs stock QEMU 7.2 (committed matrix)"
set xlabel ""
set ylabel "s"
set grid
set key below left Left reverse maxcols 2 height 1
set style fill solid 0.6
set boxwidth 0.18
set xtics ("dirty-400 0ms" 0, "dirty-400 20ms" 1, "dirty-50 0ms" 2, "dirty-50 20ms" 3, "idle 0ms" 4, "idle 20ms" 5) rotate by -25
set xrange [-0.6:5.6]
plot $d0 using 1:2 with boxes  title "stock-precopy", \
  $d1 using 1:2 with boxes  title "stock-postcopy", \
  $d2 using 1:2 with boxes  title "ferry-hybrid", \
  $d3 using 1:2 with boxes  title "ferry-precopy"
